"""`litellm.rerank(...)` with rerankd as `api_base`, for every provider that fits, with the
real package.

LiteLLM pins `huggingface-hub<2`, which rerankd's environment cannot take, so it lives in its
own virtual environment (`.venv-litellm`, made here on first use) and runs `tests/litellm/
probe.py` there as a subprocess against a real server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ServerProcess, run_server
from tests.test_clients import DOCUMENTS, MODEL, QUERY, assert_same_ranking, native_ranking

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("RERANKD_LITELLM_VENV", ROOT / ".venv-litellm"))
REQUIREMENT = "litellm>=1.70"
# Making LiteLLM's venv on first use (`make test` makes it beforehand) can outlast the default.
pytestmark = pytest.mark.timeout(1200)

PROVIDERS = [
    "cohere",
    "litellm_proxy",
    "infinity",
    "jina_ai",
    "voyage",
    "hosted_vllm",
    "together_ai",
    "huggingface",
]


def litellm_python() -> Path:
    """Create LiteLLM's venv once (from the package registry); later runs reuse it."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", REQUIREMENT],
            check=True,
            timeout=900,
        )
        stamp.write_text(REQUIREMENT + "\n")
    return python


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{bert_model}={MODEL}"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("litellm")) as running:
        yield running


@pytest.fixture(scope="module")
def answers(server: ServerProcess) -> dict[str, dict]:
    python = litellm_python()
    result = subprocess.run(
        [
            str(python),
            str(ROOT / "tests" / "litellm" / "probe.py"),
            server.url,
            MODEL,
            json.dumps(QUERY),
            json.dumps(DOCUMENTS),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {line["provider"]: line for line in lines}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_litellm_rerank(provider: str, answers: dict[str, dict], server: ServerProcess) -> None:
    expected = native_ranking(server)
    answer = answers[provider]
    assert "error" not in answer, answer
    got = [(r["index"], r["relevance_score"]) for r in answer["results"]]
    if provider == "huggingface":  # TEI has no top_n: LiteLLM gets every document back
        assert_same_ranking(got, expected)
    else:
        assert_same_ranking(got, expected[:3])
    assert [r["text"] for r in answer["results"]] == [DOCUMENTS[i] for i, _ in got]
