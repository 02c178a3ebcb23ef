"""`rerankd eval`: how much a reranker improves a retriever's ranking, on your data."""

from rerankd.evaluation.agreement import Agreement, compare
from rerankd.evaluation.data import DataError, EvalQuery, EvalSet, read_rerankd_jsonl
from rerankd.evaluation.metrics import DEFAULT_METRICS, check_metric, mean_metrics, per_query

__all__ = [
    "DEFAULT_METRICS",
    "Agreement",
    "DataError",
    "EvalQuery",
    "EvalSet",
    "check_metric",
    "compare",
    "mean_metrics",
    "per_query",
    "read_rerankd_jsonl",
]
