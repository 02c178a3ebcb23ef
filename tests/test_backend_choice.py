"""`--backend auto`: rules where no measuring is needed, else torch and ONNX Runtime timed once
on this CPU and the answer recorded beside the export (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from rerankd.config import Settings
from rerankd.engine import EngineOptions
from rerankd.engine.choice import BackendChoice, _by_rule, _decide, record_path, workload
from rerankd.engine.engine import load_engine
from rerankd.engine.options import default_batch_tokens
from rerankd.engine.plan import LongDocPolicy
from rerankd.families import bind_family, resolve
from rerankd.models import ModelSpec
from tests.server import run_server


def test_the_server_default_is_auto_and_the_library_default_is_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RERANKD_BACKEND", raising=False)  # conftest pins the tests' servers
    assert Settings().backend == "auto"
    assert EngineOptions().backend == "torch"


def test_rules_need_no_measuring(bert_model: Path, colbert_model: Path) -> None:
    bert = bind_family(resolve(ModelSpec(str(bert_model))), EngineOptions(backend="auto"))
    assert _by_rule(EngineOptions(backend="auto", device="cuda"), bert) == BackendChoice(
        "torch", "rule", "ONNX Runtime's fast path is for CPUs"
    )
    int8 = _by_rule(EngineOptions(backend="auto", dtype="int8"), bert)
    assert int8 is not None and int8.backend == "onnx"
    assert _by_rule(EngineOptions(backend="auto"), bert) is None  # fp32 on a CPU: measured
    colbert = bind_family(resolve(ModelSpec(str(colbert_model))), EngineOptions(backend="auto"))
    refused = _by_rule(EngineOptions(backend="auto"), colbert)
    assert refused is not None and refused.backend == "torch" and "ONNX" in refused.why


def test_onnx_unless_torch_is_clearly_faster() -> None:
    assert _decide({"torch": 21.0, "onnx": 20.5}).backend == "onnx"  # within the margin
    assert _decide({"torch": 25.0, "onnx": 20.0}).backend == "torch"
    assert _decide({"torch": 18.0, "onnx": 24.0}).backend == "onnx"


def test_the_workload_is_batched_like_the_cpu_scheduler(bert_model: Path) -> None:
    family = bind_family(resolve(ModelSpec(str(bert_model))), EngineOptions())
    for backend in ("torch", "onnx"):
        budget = default_batch_tokens("cpu", backend)
        batches = workload(family, backend)
        lengths = [len(item) for batch in batches for item in batch]
        assert len(lengths) >= 20 and lengths == sorted(lengths)
        assert all(len(b) == 1 or len(b) * max(len(i) for i in b) <= budget for b in batches)
        # As full as the budget allows: one more row would not have fitted.
        for batch, following in zip(batches, batches[1:], strict=False):
            assert (len(batch) + 1) * len(following[0]) > budget
    assert len(workload(family, "onnx")) > len(workload(family, "torch"))  # 512 vs 1024 tokens


def test_each_backend_and_precision_batches_at_its_own_size() -> None:
    assert default_batch_tokens("cpu", "onnx", "float32") == 512
    assert default_batch_tokens("cpu", "onnx", "int8") == 512
    assert default_batch_tokens("cpu", "torch", "float32") == 1024
    assert default_batch_tokens("cpu", "torch", "bfloat16") == 2048  # AMX wants tall tiles
    assert default_batch_tokens("cuda:0", "torch", "float16") == 16384


def test_measured_once_then_read_from_the_record(bert_model: Path, tmp_path: Path) -> None:
    options = EngineOptions(backend="auto", cache_dir=tmp_path, max_length=128)
    first = load_engine(str(bert_model), options)
    choice = first.choice
    assert choice.by == "measured"
    assert set(choice.pairs_per_s) == {"torch", "onnx"}
    assert all(rate > 0 for rate in choice.pairs_per_s.values())
    assert first.options.backend == choice.backend
    assert first.describe()["backend_choice"]["backend"] == choice.backend
    assert first.batch_tokens == default_batch_tokens("cpu", choice.backend)
    record = record_path(first.model, first.options)
    assert json.loads(record.read_text())["choice"]["backend"] == choice.backend
    first.close()

    again = load_engine(str(bert_model), options)
    assert again.choice.by == "record" and again.choice.backend == choice.backend
    assert again.choice.pairs_per_s == choice.pairs_per_s
    again.close()

    data = json.loads(record.read_text())  # an upgraded library may change the answer
    record.write_text(json.dumps({**data, "versions": {"torch": "0.0", "onnxruntime": "0.0"}}))
    assert load_engine(str(bert_model), options).choice.by == "measured"

    one_thread = EngineOptions(backend="auto", cache_dir=tmp_path, max_length=128, threads=1)
    assert load_engine(str(bert_model), one_thread).choice.by == "measured"  # its own record


def test_a_server_started_with_auto_says_what_it_chose_and_why(
    bert_model: Path, tmp_path: Path
) -> None:
    args = ["--model", f"{bert_model}=tiny-bert", "--backend", "auto", "--max-length", "128"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    with run_server(args, log_dir=tmp_path) as server:
        model = httpx.get(f"{server.url}/v1/models/tiny-bert", timeout=30).json()
        chosen = model["backend_choice"]
        assert chosen["by"] == "measured" and model["backend"] == chosen["backend"]
        # The batch budget is the chosen backend's own, not one fixed before the choice.
        assert model["max_batch_tokens"] == default_batch_tokens("cpu", chosen["backend"])
        assert model["served_dtype"] == "float32"
        info = httpx.get(f"{server.url}/info", timeout=30).json()
        assert chosen["backend"] in json.dumps(info)
        scored = httpx.post(
            f"{server.url}/rerank",
            json={"query": "what is a reranker", "texts": ["a model that scores", "bread"]},
            timeout=30,
        )
        assert scored.status_code == 200
    assert f"backend for tiny-bert: {chosen['backend']} (measured:" in server.logs()


def test_a_failed_export_serves_torch_and_records_nothing(
    bert_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rerankd.engine import onnx_backend

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("export exploded")

    monkeypatch.setattr(onnx_backend.OnnxBackend, "__init__", broken)
    options = EngineOptions(backend="auto", cache_dir=tmp_path, max_length=128)
    engine = load_engine(str(bert_model), options)
    assert engine.options.backend == "torch" and engine.choice.by == "rule"
    assert "export exploded" in engine.choice.why
    assert not record_path(engine.model, engine.options).exists()  # the next start tries again
    assert engine.run(engine.plan("q", ["d"], LongDocPolicy()).sequences).shape == (1,)


@pytest.mark.parametrize(("winner", "margin"), [("torch", -0.99), ("onnx", 100.0)])
def test_the_measured_winner_serves_without_a_second_load(
    bert_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, winner: str, margin: float
) -> None:
    from rerankd.engine import choice, onnx_backend, torch_backend

    monkeypatch.setattr(choice, "MARGIN", margin)  # decides the winner whatever this CPU's speeds
    built: list[str] = []
    closed: list[str] = []
    for cls in (torch_backend.TorchBackend, onnx_backend.OnnxBackend):
        init, close = cls.__init__, cls.close

        def counted_init(self: object, *a: object, _init: object = init, **k: object) -> None:
            built.append(type(self).__name__)
            _init(self, *a, **k)  # type: ignore[operator]

        def counted_close(self: object, _close: object = close) -> None:
            closed.append(type(self).__name__)
            _close(self)  # type: ignore[operator]

        monkeypatch.setattr(cls, "__init__", counted_init)
        monkeypatch.setattr(cls, "close", counted_close)
    options = EngineOptions(backend="auto", cache_dir=tmp_path, max_length=128)
    engine = load_engine(str(bert_model), options)
    served = {"onnx": "OnnxBackend", "torch": "TorchBackend"}[winner]
    assert engine.choice.by == "measured" and engine.choice.backend == winner
    assert engine.options.backend == winner
    assert sorted(built) == ["OnnxBackend", "TorchBackend"]  # each loaded once, the winner kept
    assert closed == [name for name in built if name != served]  # only the loser closed
    assert type(engine.backend).__name__ == served
    sequences = engine.plan("q", ["apple phone", "apple pie"], LongDocPolicy()).sequences
    reference = load_engine(str(bert_model), EngineOptions(backend="torch", max_length=128))
    assert engine.run(sequences) == pytest.approx(reference.run(sequences), abs=1e-4)
    engine.close()
    assert closed.count(served) == 1  # the engine closes the backend it was handed
    reference.close()


def test_a_choice_that_cannot_be_recorded_still_serves(
    bert_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rerankd.engine import choice

    def read_only(path: Path, chosen: BackendChoice) -> None:
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(choice, "_write", read_only)  # a cache volume mounted read-only
    options = EngineOptions(backend="auto", cache_dir=tmp_path, max_length=128)
    with caplog.at_level("WARNING", logger="rerankd.engine.choice"):
        engine = load_engine(str(bert_model), options)
    assert engine.choice.by == "measured"
    assert "could not record the choice" in caplog.text and "Read-only" in caplog.text
    assert engine.run(engine.plan("q", ["d"], LongDocPolicy()).sequences).shape == (1,)
    engine.close()
    assert not record_path(engine.model, engine.options).exists()
