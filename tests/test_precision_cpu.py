"""The probe set's make-up, tie-aware Spearman, and bf16 on CPU: chosen from the CPU's flags,
checked against fp32 on the probe set, refused (fp32 served) when it disagrees."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rerankd.engine import EngineOptions, bf16
from rerankd.engine import options as options_module
from rerankd.engine.options import check_cpu_precision
from rerankd.engine.quantize import spearman
from rerankd.engine.quantize_probe import NATURAL, composition, held_out_set, probe_set
from rerankd.families import bind_family, resolve
from rerankd.models import ModelSpec

SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"})
ZEN3 = frozenset({"avx2", "fma", "f16c"})


def test_the_probe_set_looks_like_traffic_and_the_held_out_set_is_disjoint() -> None:
    probe, held = probe_set(), held_out_set()
    made = composition(probe)
    assert made["pairs"] >= 400 and made["groups"] >= 40
    assert made["languages"] >= 6 and made["cjk_pairs"] >= 60
    assert made["short"] >= 40 and made["long"] >= 30 and made["exact_duplicates"] >= 30
    assert probe[: len(NATURAL)] == NATURAL, "the handwritten groups stay in"
    generated = probe[len(NATURAL) :]
    for _, passages in generated:  # a near-duplicate: two passages one word or character apart
        assert any(_one_apart(a, b) for i, a in enumerate(passages) for b in passages[i + 1 :])
    assert probe_set() == probe, "deterministic: the same text on every machine"
    probe_pairs = {(q, p) for q, ps in probe for p in ps}
    held_pairs = {(q, p) for q, ps in held for p in ps}
    assert len(held_pairs) >= 300 and not probe_pairs & held_pairs
    assert not {q for q, _ in probe} & {q for q, _ in held}


def _one_apart(a: str, b: str) -> bool:
    """Texts equal but for one word (or, in CJK, a few characters in one place)."""
    if a == b:
        return False
    prefix = next((i for i, (c, d) in enumerate(zip(a, b, strict=False)) if c != d), 0)
    suffix = next((i for i, (c, d) in enumerate(zip(a[::-1], b[::-1], strict=False)) if c != d), 0)
    middle = max(len(a), len(b)) - prefix - suffix
    return middle <= 24 and prefix + suffix >= min(len(a), len(b)) - 24


def test_spearman_gives_tied_scores_their_mean_rank() -> None:
    fp32 = np.array([0.1, 0.5, 0.5, 0.9])  # a passage and its exact copy tie in fp32
    assert spearman(fp32, np.array([0.1, 0.50001, 0.49999, 0.9])) == pytest.approx(
        0.9486833, abs=1e-6
    )
    assert spearman(fp32, fp32) == pytest.approx(1.0)
    assert spearman(fp32, -fp32) == pytest.approx(-1.0)


def test_bf16_is_chosen_from_the_cpus_flags() -> None:
    check_cpu_precision("bfloat16", "torch", SAPPHIRE_RAPIDS)
    check_cpu_precision("bfloat16", "torch", frozenset({"avx512_bf16"}))
    check_cpu_precision("bfloat16", "torch", frozenset({"amx_bf16"}))
    with pytest.raises(ValueError, match="refused on CPU.*AVX512_BF16 or AMX"):
        check_cpu_precision("bfloat16", "torch", ZEN3)
    with pytest.raises(ValueError, match="torch mode"):
        check_cpu_precision("bfloat16", "onnx", SAPPHIRE_RAPIDS)
    with pytest.raises(ValueError, match="refused on CPU"):
        check_cpu_precision("float16", "torch", SAPPHIRE_RAPIDS)
    check_cpu_precision("float32", "torch", ZEN3)


def test_engine_options_read_the_flags_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options_module, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    assert EngineOptions(dtype="bf16").dtype == "bfloat16"
    monkeypatch.setattr(options_module, "cpu_flags", lambda: ZEN3)
    with pytest.raises(ValueError, match="refused on CPU"):
        EngineOptions(dtype="bf16")
    assert EngineOptions(dtype="bf16", device="cuda").dtype == "bfloat16"


def test_bf16_agreement_is_checked_against_fp32_and_a_refusal_serves_fp32(
    bert_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rerankd.engine.torch_backend import TorchBackend

    monkeypatch.setattr(options_module, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    model = resolve(ModelSpec.parse(str(bert_model)))
    opts = EngineOptions(dtype="bfloat16", threads=1, cache_dir=tmp_path)
    family = bind_family(model, opts)
    record = bf16.compare(family, min_spearman=-1.0, max_deviation=1.0)
    assert record.accepted and record.probe_pairs == composition(probe_set())["pairs"]
    assert 0 < record.max_deviation < 1 and record.spearman < 1.0, "bf16 really ran"

    monkeypatch.setattr(bf16, "MIN_SPEARMAN", 1.01)  # no bf16 ranks exactly as fp32
    with caplog.at_level(logging.WARNING, logger="rerankd.engine.bf16"):
        backend = TorchBackend(opts, family)
    assert backend.served_dtype == "float32" and "refused" in backend.description
    assert "bf16 REFUSED" in caplog.text and "probe Spearman" in caplog.text
    assert bf16.record_path(family, opts).is_file()
    monkeypatch.setattr(bf16, "MIN_SPEARMAN", -1.0)
    again = TorchBackend(opts, family)  # the cached verdict: no second probe
    assert again.served_dtype == "float32"

    bf16.record_path(family, opts).unlink()
    served = TorchBackend(opts, family)
    assert served.served_dtype == "bfloat16" and served.description == "torch bfloat16 on cpu"
    import torch

    assert next(iter(served._head.parameters())).dtype == torch.bfloat16  # type: ignore[union-attr]
