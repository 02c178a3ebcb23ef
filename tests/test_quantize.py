"""int8 tuned per CPU class, checked by the accuracy probe, and re-tuned on another CPU."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from rerankd.engine import EngineOptions, quantize
from rerankd.engine.onnx_backend import ensure_exported
from rerankd.engine.quantize import (
    Int8Record,
    SessionBackend,
    cached_path,
    cpu_flags,
    int8_file,
    isa_class,
    probe_scores,
    quantize_checked,
    read_record,
    scheme_for,
)
from rerankd.families import resolve
from rerankd.models import ModelSpec, ResolvedModel


def test_the_scheme_follows_the_instruction_set() -> None:
    assert isa_class(frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"})) == "avx512vnni"
    assert isa_class(frozenset({"avx2", "avx_vnni"})) == "avxvnni"
    assert isa_class(frozenset({"avx2", "avx512bw", "avx512_vnni", "amx_int8"})) == "amx"
    assert isa_class(frozenset({"avx2", "fma"})) == "avx2"
    assert isa_class(frozenset({"fp", "asimd", "asimddp"})) == "armdot"
    assert isa_class(frozenset()) == "generic"
    for isa in ("amx", "avx512vnni", "avxvnni", "armdot"):
        assert scheme_for(isa).weights == "s8"
    for isa in ("avx2", "avx512", "generic"):
        assert scheme_for(isa).weights == "u8"
    if Path("/proc/cpuinfo").is_file():
        assert isa_class(cpu_flags()) != "generic" or not cpu_flags()


@pytest.fixture()
def exported(bert_model: Path, tmp_path: Path) -> tuple[ResolvedModel, EngineOptions, Path]:
    """A tiny BERT cross-encoder exported to fp32 ONNX in a fresh cache."""
    model = resolve(ModelSpec.parse(str(bert_model)))
    options = EngineOptions(backend="onnx", dtype="float32", cache_dir=tmp_path, threads=1)
    fp32 = ensure_exported(model, options)
    return model, EngineOptions(backend="onnx", dtype="int8", cache_dir=tmp_path, threads=1), fp32


def test_a_failed_probe_keeps_fp32_unless_forced(
    exported: tuple[ResolvedModel, EngineOptions, Path], caplog: pytest.LogCaptureFixture
) -> None:
    model, options, fp32 = exported
    entry = fp32.parent
    with caplog.at_level(logging.WARNING, logger="rerankd.engine.quantize"):
        served = quantize_checked(model, options, fp32, int8_file(entry), min_spearman=1.01)
    assert served == fp32 and not int8_file(entry).exists()
    record = read_record(entry)
    assert record is not None and not record.accepted and not record.serves_int8
    assert record.tried and len(record.tried) > 1, "fp32 layers were tried before giving up"
    assert "REFUSED" in caplog.text and "--force-int8" in caplog.text
    assert cached_path(entry, options) == fp32  # later starts serve fp32 without re-probing

    forced = EngineOptions(**{**options.__dict__, "force_int8": True})
    assert cached_path(entry, forced) == int8_file(entry)
    served = quantize_checked(model, forced, fp32, int8_file(entry), min_spearman=1.01)
    assert served == int8_file(entry) and served.is_file()
    record = read_record(entry)
    assert record is not None and record.forced and record.serves_int8


def test_a_passing_probe_serves_int8_and_records_the_cpu(
    exported: tuple[ResolvedModel, EngineOptions, Path],
) -> None:
    model, options, fp32 = exported
    served = quantize_checked(
        model, options, fp32, int8_file(fp32.parent), min_spearman=-1.0, max_deviation=1.0
    )
    assert served == int8_file(fp32.parent) and served.is_file()
    record = json.loads(served.with_suffix(".json").read_text())
    assert record["accepted"] and record["isa"] == isa_class(cpu_flags())
    assert record["weights"] == scheme_for(record["isa"]).weights
    assert set(record["cpu_flags"]) <= cpu_flags()
    assert record["probe_pairs"] >= 60 and -1.0 <= record["spearman"] <= 1.0
    # int8 really runs: its scores differ from fp32's, a little
    int8_scores = probe_scores(model, options, SessionBackend(served, 1))
    fp32_scores = probe_scores(model, options, SessionBackend(fp32, 1))
    assert (
        0
        < np.max(np.abs(int8_scores - fp32_scores))
        == pytest.approx(record["max_deviation"], abs=1e-4)
    )


def test_a_cache_from_another_cpu_class_is_retuned(
    exported: tuple[ResolvedModel, EngineOptions, Path], caplog: pytest.LogCaptureFixture
) -> None:
    model, options, fp32 = exported
    entry = fp32.parent
    here = isa_class(cpu_flags())
    other = "avx2" if here != "avx2" else "avx512vnni"
    quantize_checked(model, options, fp32, int8_file(entry), min_spearman=-1.0, max_deviation=1.0)
    # Pretend the cache was built on a CPU of another class and copied here.
    int8_file(entry).rename(int8_file(entry, other))
    int8_file(entry).with_suffix(".json").rename(int8_file(entry, other).with_suffix(".json"))
    assert cached_path(entry, options) == int8_file(entry) and not int8_file(entry).exists()
    with caplog.at_level(logging.WARNING, logger="rerankd.engine.quantize"):
        served = ensure_exported(model, options)
    assert f"another CPU class (model.int8-{other}.json)" in caplog.text
    assert served in (int8_file(entry), fp32)
    assert read_record(entry) is not None and read_record(entry, other) is not None


def test_an_activation_outlier_is_found_and_smoothed_away(
    exported: tuple[ResolvedModel, EngineOptions, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnx
    from onnx import numpy_helper

    model, options, fp32 = exported
    graph = onnx.load(str(fp32))
    target = next(n for n in graph.graph.node if n.op_type == "MatMul" and "output" in n.name)
    # The same function, but one input feature of `target` is 1000x larger and its weight row
    # 1000x smaller: an activation outlier, which per-tensor u8 activations cannot survive.
    weights = {i.name: i for i in graph.graph.initializer}
    w = numpy_helper.to_array(weights[target.input[1]]).copy()
    w[0] /= 1000.0
    weights[target.input[1]].CopyFrom(numpy_helper.from_array(w, target.input[1]))
    scale = np.ones(w.shape[0], dtype=np.float32)
    scale[0] = 1000.0
    graph.graph.initializer.append(numpy_helper.from_array(scale, "outlier_scale"))
    position = list(graph.graph.node).index(target)
    graph.graph.node.insert(
        position, onnx.helper.make_node("Mul", [target.input[0], "outlier_scale"], ["outlier_x"])
    )
    target.input[0] = "outlier_x"
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(graph, str(corrupted))
    backend = SessionBackend(corrupted, 1)
    fp32_scores = probe_scores(model, options, backend)
    for kind in ("s8", "u8"):
        monkeypatch.setattr(quantize, "SMOOTHING", (0.0,))
        plain = quantize.sensitivity(corrupted, backend.feeds, kind)  # type: ignore[arg-type]
        assert plain[0][0] == target.name, "found: the worst product without smoothing"
        assert plain[0][1] > 2 * plain[1][1]
        monkeypatch.undo()
        plans = {p.name: p for p in quantize.plan_products(corrupted, backend.feeds, kind)}  # type: ignore[arg-type]
        fixed = plans[target.name]
        assert fixed.alpha > 0 and fixed.error < plain[0][1] / 3, "and fixed by smoothing"
        assert fixed.scale is not None and fixed.scale[0] > 20 * np.median(fixed.scale)
    smoothed = tmp_path / "smoothed.onnx"
    assert quantize.smooth(corrupted, smoothed, list(plans.values())) >= 1
    same = probe_scores(model, options, SessionBackend(smoothed, 1))
    assert np.abs(same - fp32_scores).max() < 1e-4, (
        "smoothing alone leaves fp32 scores as they were"
    )


def test_export_cli_prints_the_probe_and_info_shows_it(bert_model: Path, tmp_path: Path) -> None:
    from tests.server import run_server
    from tests.test_cli import rerankd

    result = rerankd(
        "export", "--model", str(bert_model), "--int8", "--force-int8", "--cache-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "probe Spearman" in result.stdout + result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == int8_file(path.parent) and path.is_file()
    record = read_record(path.parent)
    assert isinstance(record, Int8Record)
    args = ["--model", str(bert_model), "--backend", "onnx", "--dtype", "int8"]
    args += ["--cache-dir", str(tmp_path), "--force-int8"]
    with run_server(args, log_dir=tmp_path) as server, server.client() as http:
        info = http.get("/info").json()
    described = json.dumps(info)
    assert f'"spearman": {record.spearman}' in described
    assert f'"isa": "{record.isa}"' in described and '"serving": "int8"' in described
    shutil.rmtree(tmp_path / "onnx", ignore_errors=True)
