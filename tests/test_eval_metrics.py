"""Metrics against values worked out by hand, with trec_eval's rules on ties and misses."""

from __future__ import annotations

import pytest

from rerankd.evaluation.agreement import compare, spearman
from rerankd.evaluation.metrics import check_metric, mean_metrics, per_query, trec_order

# q1: graded judgments, no ties. q2: a tie between y and x, and a relevant document (z) that
# is not among the candidates. q3 has no judgments, q4 no candidates: neither is measured.
QRELS = {"q1": {"a": 1, "c": 2}, "q2": {"x": 1, "z": 1}, "q4": {"m": 1}}
RUN = {
    "q1": {"a": 0.9, "b": 0.8, "c": 0.7},
    "q2": {"x": 0.5, "y": 0.5, "w": 0.1},
    "q3": {"p": 1.0},
}
METRICS = ["mrr@10", "mrr@1", "map", "ndcg@10", "recall@10", "recall@1", "precision@1"]


def test_each_metric_equals_its_hand_computed_value() -> None:
    values = per_query(QRELS, RUN, METRICS)
    # q1 ranks a, b, c. a (grade 1) at 1, c (grade 2) at 3.
    assert values["mrr@10"]["q1"] == pytest.approx(1.0)
    assert values["map"]["q1"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # trec_eval's nDCG gain is the grade itself: DCG = 1/log2(2) + 2/log2(4) = 2,
    # ideal = 2/log2(2) + 1/log2(3).
    assert values["ndcg@10"]["q1"] == pytest.approx(2 / (2 + 1 / 1.584962500721156))
    assert values["recall@1"]["q1"] == pytest.approx(0.5)
    assert values["precision@1"]["q1"] == pytest.approx(1.0)
    # q2: the tie goes to the larger document id (trec_eval), so y ranks before x;
    # z was never retrieved, so recall stops at 1/2 and AP divides by 2 relevant documents.
    assert values["mrr@10"]["q2"] == pytest.approx(0.5)
    assert values["mrr@1"]["q2"] == 0.0
    assert values["precision@1"]["q2"] == 0.0
    assert values["map"]["q2"] == pytest.approx((1 / 2) / 2)
    assert values["ndcg@10"]["q2"] == pytest.approx(
        (1 / 1.584962500721156) / (1 + 1 / 1.584962500721156)
    )
    assert values["recall@10"]["q2"] == pytest.approx(0.5)
    assert all(set(v) == {"q1", "q2"} for v in values.values())


def test_means_are_over_the_measured_queries() -> None:
    means = mean_metrics(QRELS, RUN, ["mrr@10", "map", "recall@10"])
    assert means == pytest.approx({"mrr@10": 0.75, "map": (5 / 6 + 1 / 4) / 2, "recall@10": 0.75})


def test_same_ranking_as_trec_eval_itself_on_ties() -> None:
    """pytrec_eval (trec_eval's code) on the raw, tied run gives the same numbers."""
    import pytrec_eval

    judged = {q: v for q, v in QRELS.items() if q in RUN}
    reference = pytrec_eval.RelevanceEvaluator(judged, {"map", "ndcg_cut.10", "P.1", "recip_rank"})
    expected = reference.evaluate({q: RUN[q] for q in judged})
    ours = per_query(QRELS, RUN, ["map", "ndcg@10", "precision@1", "mrr@10"])
    for qid, row in expected.items():
        assert ours["map"][qid] == pytest.approx(row["map"])
        assert ours["ndcg@10"][qid] == pytest.approx(row["ndcg_cut_10"])
        assert ours["precision@1"][qid] == pytest.approx(row["P_1"])
        assert ours["mrr@10"][qid] == pytest.approx(row["recip_rank"])  # every rank is <= 10


def test_mrr_cutoff_counts_only_the_first_k() -> None:
    run = {"q": {f"d{i:02d}": 100.0 - i for i in range(12)}}
    qrels = {"q": {"d10": 1}}  # rank 11
    values = mean_metrics(qrels, run, ["mrr@10", "mrr@11", "recall@10"])
    assert values == pytest.approx({"mrr@10": 0.0, "mrr@11": 1 / 11, "recall@10": 0.0})


def test_trec_order_breaks_ties_by_descending_id() -> None:
    assert trec_order({"a": 1.0, "b": 2.0, "c": 1.0, "d": 2.0}) == ["d", "b", "c", "a"]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("nDCG@10", "ndcg@10"),
        ("MRR@5", "mrr@5"),
        ("MAP", "map"),
        ("Recall@100", "recall@100"),
        ("P@1", "precision@1"),
    ],
)
def test_metric_names(given: str, canonical: str) -> None:
    assert check_metric(given) == canonical


@pytest.mark.parametrize("bad", ["ndgc@10", "recall", "mrr@0", "f1"])
def test_unknown_metrics_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="metric"):
        check_metric(bad)


def test_agreement_of_two_modes() -> None:
    import numpy as np

    first = [np.array([0.9, 0.5, 0.1]), np.array([0.2, 0.8])]
    second = [np.array([0.8, 0.55, 0.1]), np.array([0.3, 0.1])]
    result = compare("fp32", "int8", first, second)
    assert result.max_abs_deviation == pytest.approx(0.7)
    assert result.top1_agreement == 0.5
    assert result.spearman_per_query == pytest.approx((1.0 + -1.0) / 2)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
