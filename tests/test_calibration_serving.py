"""A real server with a calibration attached: relevance_score is the calibration of the raw
score on every dialect, the ranking is the raw one, `min_relevance` drops exactly what is below
it, spans point at the sentence that answers, and a calibration that does not fit is refused."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from rerankd.calibration import load_calibration
from rerankd.calibration.attach import identity_of
from rerankd.calibration.fit import Labeled, fit
from rerankd.cli import app
from rerankd.client import Client
from rerankd.evaluation.synthetic import keyword_task, vocabulary, write_jsonl
from rerankd.families import resolve
from rerankd.models import ModelSpec
from tests.registry_helpers import launch, register, seed_spec
from tests.server import ServerProcess, run_server

QUERY = "capital of France"
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Bananas are yellow.",
    "France is a country in Europe.",
    "The Eiffel Tower is in Paris.",
    "Berlin is the capital of Germany.",
    "Cats sleep a lot.",
]
EXTRAS = ["東京は大きい。", "Great 👍🏽 news for the cafe\u0301!", "👨\u200d👩\u200d👧 family?"]
SEPARATORS = [" ", "\r\n", "  ", "\n\n", "\r\n\r\n"]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served-cal")
    data = write_jsonl(keyword_task(40, seed=21), root / "judged.jsonl")
    out = root / "calibration.json"
    invoke("calibrate", "--model", "builtin", "--data", str(data), "--output", str(out),
           "--method", "platt", "--threads", "1")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def calibrated_model(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny BERT with a calibration made for it beside its weights."""
    model = tmp_path_factory.mktemp("beside") / "tiny-calibrated"
    shutil.copytree(bert_model, model)
    fitted_for(model, model / "calibration.json")
    return model


@pytest.fixture(scope="module")
def server(
    calibration_file: Path, calibrated_model: Path, tmp_path_factory: pytest.TempPathFactory
):
    """The built-in model with `--calibration` (the first model: what a request naming none
    gets), and beside it a model whose calibration sits beside its weights."""
    tmp = tmp_path_factory.mktemp("served")
    args = ["--model", "builtin", "--calibration", str(calibration_file), "--threads", "1",
            "--model", str(calibrated_model), "--data-dir", str(tmp / "data")]  # fmt: skip
    with run_server(args, log_dir=tmp) as running:
        yield running


def raw_scores(http: httpx.Client) -> np.ndarray:
    answer = http.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True})
    raw = np.empty(len(DOCUMENTS))
    for result in answer.json()["results"]:
        raw[result["index"]] = result["score"]
    return raw


def test_every_dialect_answers_the_calibration_of_the_raw_score(
    server: ServerProcess, calibration_file: Path
) -> None:
    calibration = load_calibration(calibration_file)
    with server.client() as http:
        raw = raw_scores(http)
        expected = calibration.apply(raw)
        plain = http.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
        order = [r["index"] for r in plain["results"]]
        assert order == list(np.argsort(-raw, kind="stable"))  # the raw ranking
        for r in plain["results"]:
            assert r["raw_score"] == pytest.approx(raw[r["index"]], abs=1e-9)
            assert r["relevance_score"] == pytest.approx(calibration.apply(np.array([r["raw_score"]]))[0], abs=1e-12)  # fmt: skip
            assert r["score"] == r["relevance_score"]

        def check(pairs: list[tuple[int, float]], dialect: str) -> None:
            assert len(pairs) == len(DOCUMENTS), dialect
            for index, score in pairs:
                assert score == pytest.approx(expected[index], abs=1e-9), dialect

        for path in ("/v1/rerank", "/v2/rerank"):
            body = http.post(path, json={"query": QUERY, "documents": DOCUMENTS}).json()
            check([(r["index"], r["relevance_score"]) for r in body["results"]], path)
            check([(r["index"], r["relevance_score"]) for r in body["data"]], path + " data")
            assert all(r["raw_score"] == pytest.approx(raw[r["index"]]) for r in body["results"])
        tei = http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS}).json()
        check([(r["index"], r["score"]) for r in tei], "TEI")
        tei_raw = http.post(
            "/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}
        )
        assert {r["index"]: r["score"] for r in tei_raw.json()} == pytest.approx(dict(enumerate(raw)))  # fmt: skip
        mixed = http.post("/v1/reranking", json={"query": QUERY, "input": DOCUMENTS}).json()
        check([(r["index"], r["score"]) for r in mixed["data"]], "Mixedbread")
        score = http.post("/score", json={"text_1": QUERY, "text_2": DOCUMENTS}).json()
        check([(r["index"], r["score"]) for r in score["data"]], "vLLM score")
        batch = http.post(
            "/batch_rerank", json={"queries": [{"query": QUERY, "documents": DOCUMENTS}]}
        ).json()
        check([(r["index"], r["score"]) for r in batch["results"][0]["results"]], "batch")

        info = http.get("/info").json()["models"][0]["calibration"]
        card = http.get("/v1/models/builtin").json()["calibration"]
        saved = json.loads(calibration_file.read_text())
        for described in (info, card):
            assert described["file"] == str(calibration_file)
            assert (
                described["method"] == "platt" and described["data_hash"] == saved["data"]["hash"]
            )
            assert described["revision"] == saved["model"]["revision"]


def test_min_relevance_drops_exactly_what_is_below_it(server: ServerProcess) -> None:
    with server.client() as http:
        plain = http.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
        scores = [r["relevance_score"] for r in plain["results"]]
        threshold = (scores[1] + scores[2]) / 2  # between the second and the third
        kept = [r["index"] for r in plain["results"] if r["relevance_score"] >= threshold]
        assert len(kept) == 2
        for path, top in (("/rerank", "top_n"), ("/v1/rerank", "top_n"), ("/v2/rerank", "top_n")):
            body = {"query": QUERY, "documents": DOCUMENTS, "min_relevance": threshold}
            answer = http.post(path, json=body).json()["results"]
            assert [r["index"] for r in answer] == kept, path
            one = http.post(path, json={**body, top: 1}).json()["results"]
            assert [r["index"] for r in one] == kept[:1], path
            many = http.post(path, json={**body, top: 5}).json()["results"]
            assert [r["index"] for r in many] == kept, path  # top_n applies after the threshold
        exact = http.post(
            "/rerank", json={"query": QUERY, "documents": DOCUMENTS, "min_relevance": scores[3]}
        ).json()["results"]
        assert len(exact) == 4  # a score equal to the threshold is kept
        none = http.post(
            "/rerank", json={"query": QUERY, "documents": DOCUMENTS, "min_relevance": 1.01}
        ).json()
        assert none["results"] == [] and none["usage"]["documents"] == len(DOCUMENTS)
        for bad in ("high", True, [0.5]):
            refused = http.post(
                "/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS, "min_relevance": bad}
            )
            assert 400 <= refused.status_code < 500 and "min_relevance" in refused.text


def span_documents(seed: int, count: int) -> list[tuple[str, str, str]]:
    """(query, document, answering sentence): sentences of filler words, one with the query's
    keyword and words; CJK, emoji, combining marks and \\r\\n between them."""
    keywords, filler = vocabulary(0)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        keyword, asked = rng.choice(keywords), rng.sample(filler, 3)
        sentences = [" ".join(rng.sample(filler, 7)).capitalize() + "." for _ in range(5)]
        words = [*rng.sample(filler, 4), keyword, *asked]
        rng.shuffle(words)
        answer = " ".join(words).capitalize() + "."
        sentences[rng.randrange(5)] = answer
        sentences.insert(rng.randrange(6), rng.choice(EXTRAS))
        text = "".join(s + rng.choice(SEPARATORS) for s in sentences)
        out.append((f"{keyword} {' '.join(asked)}", text, answer))
    return out


@pytest.mark.parametrize(
    "long_documents",
    [{}, {"long_document_strategy": "chunk", "max_tokens_per_doc": 24, "max_chunks_per_doc": 8}],
    ids=["truncate", "chunk"],
)
def test_spans_cover_the_answering_sentence_with_exact_offsets(
    server: ServerProcess, calibration_file: Path, long_documents: dict
) -> None:
    calibration = load_calibration(calibration_file)
    cases = span_documents(seed=7, count=6)
    with server.client() as http:
        for query, text, answer in cases:
            documents = [text, "Cats sleep a lot. 猫は寝る。"]
            body = {"query": query, "documents": documents, **long_documents}
            plain = http.post("/rerank", json=body).json()
            spanned = http.post("/rerank", json={**body, "return_spans": True}).json()
            assert [r["index"] for r in spanned["results"]] == [
                r["index"] for r in plain["results"]
            ]
            first = next(r for r in spanned["results"] if r["index"] == 0)
            spans = first["spans"]
            assert 1 <= len(spans) <= 3
            top = spans[0]
            assert text[top["start"] : top["end"]] == answer
            for span in spans:
                piece = text[span["start"] : span["end"]]
                assert piece == piece.strip() and piece in text
                assert "\r" not in piece and "\n" not in piece  # one sentence each (window 1)
            assert [s["score"] for s in spans] == sorted((s["score"] for s in spans), reverse=True)
            # Span scores are calibrated like documents: the window scored as a document.
            alone = http.post(
                "/rerank",
                json={"query": query, "documents": [answer], "raw_scores": True},
            ).json()["results"][0]["score"]
            assert top["score"] == pytest.approx(calibration.apply(np.array([alone]))[0], abs=1e-6)
            assert spanned["usage"]["span_windows"] >= 6
            assert "span_windows" not in plain["usage"]
        limited = http.post(
            "/v2/rerank",
            json={"query": cases[0][0], "documents": [cases[0][1]], "return_spans": True,
                  "max_spans": 1},
        ).json()  # fmt: skip
        (result,) = limited["results"]
        assert len(result["spans"]) == 1
        assert cases[0][1][result["spans"][0]["start"] : result["spans"][0]["end"]] == cases[0][2]


def test_span_offsets_keep_every_character_whole(server: ServerProcess) -> None:
    text = (
        "東京は日本の首都です。大阪は大きい！\r\n"
        "Café au lait 👍🏽. The cafe\u0301 opens at 9! 👨\u200d👩\u200d👧 are here?\r\n"
        "Ünïcödé ok."
    )
    with server.client() as http:
        answer = http.post(
            "/rerank",
            json={"query": "coffee opening hours", "documents": [text], "return_spans": True,
                  "max_spans": 10},
        ).json()  # fmt: skip
    spans = answer["results"][0]["spans"]
    pieces = {text[s["start"] : s["end"]] for s in spans}
    expected = {"東京は日本の首都です。", "大阪は大きい！", "Café au lait 👍🏽.",
                "The cafe\u0301 opens at 9!", "👨\u200d👩\u200d👧 are here?", "Ünïcödé ok."}  # fmt: skip
    assert len(pieces) == 3 and pieces <= expected  # the server allows 3 spans per document


def test_usage_counts_the_span_windows_and_the_client_and_cli_expose_both(
    server: ServerProcess,
) -> None:
    query, text, answer = span_documents(seed=3, count=1)[0]
    with Client(server.url) as client:
        plain = client.rerank(query, [text, "Cats sleep a lot."], raw_scores=False)
        spanned = client.rerank(query, [text, "Cats sleep a lot."], spans=True)
        assert spanned.usage.tokens > plain.usage.tokens or spanned.usage.span_windows > 0
        best = spanned.results[0]
        assert best.index == 0 and best.raw is not None and best.spans
        assert text[best.spans[0].start : best.spans[0].end] == answer
        threshold = (plain.results[0].score + plain.results[1].score) / 2
        kept = client.rerank(query, [text, "Cats sleep a lot."], min_relevance=threshold)
        assert [r.index for r in kept.results] == [0]
    shown = invoke("rerank", query, text, "Cats sleep a lot.", "--endpoint", server.url,
                   "--spans", "--json", "--min-relevance", str(threshold))  # fmt: skip
    (row,) = json.loads(shown)
    assert row["index"] == 0 and "raw_score" in row
    top = row["spans"][0]
    assert text[top["start"] : top["end"]] == answer


def test_the_in_process_reranker_answers_as_the_server(
    server: ServerProcess, calibration_file: Path
) -> None:
    from rerankd.reranker import Reranker

    query, text, answer = span_documents(seed=3, count=1)[0]
    reranker = Reranker("builtin", threads=1, calibration=calibration_file)
    local = reranker.rerank(query, [text, "Cats sleep a lot."], spans=True)
    with Client(server.url) as client:
        remote = client.rerank(query, [text, "Cats sleep a lot."], spans=True)
    for mine, theirs in zip(local, remote.results, strict=True):
        assert mine.index == theirs.index and mine.score == pytest.approx(theirs.score, abs=1e-6)
        assert [(s.start, s.end) for s in mine.spans or []] == [
            (s.start, s.end) for s in theirs.spans or []
        ]


# Refusals -------------------------------------------------------------------------------------


def fitted_for(model: Path, path: Path) -> Path:
    """A calibration made for `model`'s weights (fitted on made-up scores: only its identity
    and shape matter here)."""
    resolved = resolve(ModelSpec.parse(str(model)))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    raw = labels + rng.normal(0, 1, 200)
    data = Labeled(raw, 1 / (1 + np.exp(-raw)), labels, np.arange(200) // 10)
    identity = identity_of(resolved)
    fit(data, identity, methods=("platt",)).calibration.save(path)
    return path


def test_a_calibration_for_other_weights_stops_the_start_naming_the_file(
    calibration_file: Path, bert_model: Path, tmp_path: Path
) -> None:
    args = [
        "--model",
        str(bert_model),
        "--calibration",
        str(calibration_file),
        "--max-length",
        "64",
    ]
    with run_server(args, log_dir=tmp_path, wait_ready=False) as started:
        assert started.process.wait(timeout=120) != 0
        log = started.logs()
    assert str(calibration_file) in log and "no served model has those weights" in log
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "rerankd-calibration", "version": 1, "method": "platt"')
    with run_server(["--model", "builtin", "--calibration", str(broken)], log_dir=tmp_path,
                    wait_ready=False) as started:  # fmt: skip
        assert started.process.wait(timeout=120) != 0
        log = started.logs()
    assert str(broken) in log and "not a readable JSON file" in log


def test_beside_the_weights_and_as_a_registration_field(
    server: ServerProcess, calibration_file: Path, calibrated_model: Path, bert_model: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    beside = calibrated_model / "calibration.json"
    foreign = tmp_path / "foreign.json"
    shutil.copy(calibration_file, foreign)
    running = server
    with running.client() as http:
        card = http.get("/v1/models/tiny-calibrated").json()
        assert card["calibration"]["file"] == str(beside)
        calibration = load_calibration(beside)
        answer = http.post(
            "/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": "tiny-calibrated"}
        ).json()
        for r in answer["results"]:
            assert r["relevance_score"] == pytest.approx(calibration.apply(np.array([r["raw_score"]]))[0])  # fmt: skip

        spec = seed_spec(bert_model, model_name="wrong-calibration", calibration=str(foreign))
        assert register(running.url, spec).status_code == 200
        failed = launch(running.url, "wrong-calibration")
        assert failed.status_code == 400
        assert str(foreign) in failed.json()["detail"] and "not for" in failed.json()["detail"]
        described = http.get("/v1/models/wrong-calibration").json()
        assert described["state"] == "failed" and str(foreign) in described["error"]

        good = seed_spec(bert_model, model_name="right-calibration", calibration=str(beside))
        assert register(running.url, good).status_code == 200
        assert launch(running.url, "right-calibration").status_code == 200
        card = http.get("/v1/models/right-calibration").json()
        assert card["state"] == "ready" and card["calibration"]["file"] == str(beside)


def test_batch_rerank_takes_min_relevance_and_spans_like_rerank(server: ServerProcess) -> None:
    cases = span_documents(seed=11, count=2)
    with server.client() as http:
        singles = [
            http.post(
                "/rerank",
                json={"query": q, "documents": [t, *DOCUMENTS[:3]], "return_spans": True},
            ).json()
            for q, t, _ in cases
        ]
        scores = sorted(r["score"] for r in singles[0]["results"])
        threshold = (scores[-1] + scores[-2]) / 2  # keeps exactly the best of the first query
        body = {
            "queries": [{"query": q, "documents": [t, *DOCUMENTS[:3]]} for q, t, _ in cases],
            "return_spans": True,
            "min_relevance": threshold,
        }
        body["queries"][1]["min_relevance"] = -1.0  # a query's own threshold wins over the call's
        batch = http.post("/batch_rerank", json=body).json()
        first, second = batch["results"]
        assert [r["index"] for r in first["results"]] == [singles[0]["results"][0]["index"]]
        assert [r["index"] for r in second["results"]] == [
            r["index"] for r in singles[1]["results"]
        ]
        for answer, single, (_, text, sentence) in zip(
            batch["results"], singles, cases, strict=True
        ):
            top = answer["results"][0]
            # The same windows; a score may differ in the last bit with the batch it ran in.
            expected = single["results"][0]["spans"]
            assert [(s["start"], s["end"]) for s in top["spans"]] == [
                (s["start"], s["end"]) for s in expected
            ]
            assert [s["score"] for s in top["spans"]] == pytest.approx(
                [s["score"] for s in expected], rel=1e-6, abs=1e-7
            )
            assert text[top["spans"][0]["start"] : top["spans"][0]["end"]] == sentence
            assert answer["usage"]["span_windows"] >= 6
        plain = http.post("/batch_rerank", json={"queries": body["queries"][:1]}).json()
        assert "spans" not in plain["results"][0]["results"][0]
        assert len(plain["results"][0]["results"]) == 4
        refused = http.post("/batch_rerank", json={**body, "min_relevance": "high"})
        assert refused.status_code == 422 or refused.status_code == 400
        assert "min_relevance" in refused.text
    with Client(server.url) as client:
        answers = client.batch_rerank(
            [(q, [t, *DOCUMENTS[:3]]) for q, t, _ in cases], min_relevance=threshold, spans=True
        )
        assert [r.index for r in answers[0].results] == [0]
        assert answers[0].results[0].spans and answers[0].usage.span_windows >= 6
