"""The command line: serve's settings, rerank, export and models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerankd.config import Settings


def rerankd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "rerankd", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250", **(env or {})},
    )


def test_serve_help_lists_every_setting_with_its_environment_variable() -> None:
    result = rerankd("serve", "--help")
    assert result.returncode == 0
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in result.stdout
        assert "RERANKD_" + name.upper() in result.stdout


def test_settings_come_from_the_environment_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_MODEL", "builtin, some/model=named")
    monkeypatch.setenv("RERANKD_MAX_DOCUMENTS", "42")
    monkeypatch.setenv("RERANKD_API_KEYS", "a,b")
    settings = Settings()
    assert settings.model == ["builtin", "some/model=named"] and settings.max_documents == 42
    assert settings.api_keys == ["a", "b"] and settings.auth_enabled
    assert Settings(max_documents=7).max_documents == 7


def test_bad_settings_fail_at_start_with_a_clear_message() -> None:
    result = rerankd("serve", "--dtype", "float16")
    assert result.returncode == 2 and "refused on CPU" in result.stderr
    result = rerankd("serve", "--backend", "tensorrt")
    assert result.returncode == 2 and "backend" in result.stderr


def test_unknown_model_makes_serve_exit_non_zero(tmp_path: Path) -> None:
    result = rerankd("serve", "--model", "no-such-org/no-such-model", "--port", "0")
    assert result.returncode == 1
    assert "no-such-org/no-such-model" in result.stderr and "HF_HUB_OFFLINE" in result.stderr


def test_rerank_prints_a_ranked_table_and_reads_jsonl(tmp_path: Path) -> None:
    table = rerankd(
        "rerank",
        "--model",
        "builtin",
        "capital of France",
        "Bananas are yellow.",
        "Paris is the capital of France.",
    )
    assert table.returncode == 0, table.stderr
    first_row = next(line for line in table.stdout.splitlines() if "│" in line and "1 │" in line)
    assert "Paris" in first_row
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "Bananas are yellow."}\n"Paris is the capital of France."\n')
    as_json = rerankd("rerank", "--json", "--file", str(jsonl), "capital of France")
    ranked = json.loads(as_json.stdout)
    assert [r["index"] for r in ranked] == [1, 0]
    empty = rerankd("rerank", "", "doc")
    assert empty.returncode == 2 and "query is empty" in empty.stderr


def test_export_builds_the_onnx_cache(bert_model: Path, tmp_path: Path) -> None:
    result = rerankd("export", "--model", str(bert_model), "--int8", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert "probe Spearman" in result.stdout + result.stderr  # the int8 check's figures
    # int8 for this CPU class, or fp32 where the accuracy probe refused int8 (tests/test_quantize)
    assert path.name.startswith(("model.int8-", "model.onnx")) and path.is_file()
    assert (path.parent / "model.onnx").is_file()
    assert path.is_relative_to(tmp_path)


def test_models_prints_the_revision(bert_model: Path) -> None:
    result = rerankd("models", str(bert_model), "builtin")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["cross-encoder", "bi-encoder"]
    assert all(line["revision"].startswith("sha256:") for line in lines)
