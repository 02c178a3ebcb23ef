"""`--family` and `--instruction` (and a registration's `family`/`instruction`) reach the model
wherever it is named: serve, the README's own command, rerank, export, models, the registry's
HTTP registrations and `rerankd.asgi` under uvicorn.

The model is a Qwen3 reranker in a directory whose name says nothing ("my-qwen3-finetune"), so
only the family flag can make rerankd read it as one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rerankd import Reranker
from tests.registry_helpers import launch, register, rerankd_cli, seed_spec
from tests.server import ServerProcess, _wait_healthy, free_port

README = Path(__file__).resolve().parents[1] / "README.md"
INSTRUCTION = "Given a legal question, retrieve the statutes that answer it"
QUERY = "what is the capital of France"
DOCUMENTS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]


@pytest.fixture(scope="module")
def finetune(qwen3_reranker: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3 reranker, copied to a directory whose name is no hint."""
    root = tmp_path_factory.mktemp("plain")
    return Path(shutil.copytree(qwen3_reranker, root / "my-qwen3-finetune"))


@pytest.fixture(scope="module")
def expected(finetune: Path) -> np.ndarray:
    reranker = Reranker(finetune, family="qwen3-reranker", threads=1)
    scores = reranker.score([(QUERY, d) for d in DOCUMENTS], instruction=INSTRUCTION)
    return np.asarray(scores)


def served_scores(url: str, model: str | None = None, **extra: object) -> np.ndarray:
    body: dict[str, object] = {"query": QUERY, "documents": DOCUMENTS, **extra}
    if model is not None:
        body["model"] = model
    response = httpx.post(f"{url}/rerank", json=body, timeout=60)
    assert response.status_code == 200, response.text
    results = sorted(response.json()["results"], key=lambda r: r["index"])
    return np.asarray([r["relevance_score"] for r in results])


def test_without_the_flag_the_plain_directory_is_refused_naming_the_flag(finetune: Path) -> None:
    result = rerankd_cli("models", str(finetune), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "--family" in result.stderr


def readme_command() -> str:
    return next(
        line
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.startswith("rerankd serve --model ./my-qwen3-finetune")
    )


@pytest.fixture(scope="module")
def readme_server(
    finetune: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The README's `rerankd serve` line, run as written beside the model directory."""
    args = shlex.split(readme_command().split("  #")[0])[2:]  # drop "rerankd serve"
    port = free_port()
    log = tmp_path_factory.mktemp("readme") / "readme.log"
    command = [sys.executable, "-m", "rerankd", "serve", *args, "--port", str(port)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "RERANKD_THREADS": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=finetune.parent, stdout=sink, stderr=subprocess.STDOUT, env=environment
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_healthy(server, 120)
        yield server
    finally:
        server.terminate()
        process.wait(timeout=30)


def test_readme_family_example_serves_with_its_instruction(
    readme_server: ServerProcess, expected: np.ndarray
) -> None:
    assert INSTRUCTION in readme_command()
    # The model's default instruction (--instruction) is what a request without one runs.
    np.testing.assert_allclose(served_scores(readme_server.url), expected, atol=1e-6)
    info = httpx.get(f"{readme_server.url}/info", timeout=30).text
    assert "qwen3-reranker" in info and INSTRUCTION in info


@pytest.fixture
def server(readme_server: ServerProcess) -> ServerProcess:
    """The registration tests' server: the README's (they register names of their own; a
    request naming no model still gets the README's model, the first ready one)."""
    return readme_server


def test_a_registration_carries_its_family_and_instruction(
    server: ServerProcess, finetune: Path, expected: np.ndarray
) -> None:
    spec = seed_spec(finetune, model_name="legal-qwen3")
    spec.update(family="qwen3-reranker", instruction=INSTRUCTION)
    assert register(server.url, spec).status_code == 200
    response = launch(server.url, "legal-qwen3", threads=1)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(served_scores(server.url, "legal-qwen3"), expected, atol=1e-6)


def test_a_registration_without_a_family_fails_to_launch_naming_it(
    server: ServerProcess, finetune: Path
) -> None:
    assert register(server.url, seed_spec(finetune, model_name="plain-qwen3")).status_code == 200
    response = launch(server.url, "plain-qwen3", threads=1)
    assert response.status_code >= 400
    assert "--family" in response.text or "family" in response.text


def test_rerank_command_takes_family_and_instruction(finetune: Path, expected: np.ndarray) -> None:
    result = rerankd_cli(
        "rerank", "--model", str(finetune), "--family", "qwen3-reranker",
        "--instruction", INSTRUCTION, "--json", QUERY, *DOCUMENTS,
        env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import json

    by_index = {r["index"]: r["score"] for r in json.loads(result.stdout)}
    np.testing.assert_allclose([by_index[i] for i in range(3)], expected, atol=1e-6)


def test_models_and_export_take_the_family(finetune: Path, tmp_path: Path) -> None:
    models = rerankd_cli(
        "models", str(finetune), "--family", "qwen3-reranker", env={"HF_HUB_OFFLINE": "1"}
    )
    assert models.returncode == 0, models.stderr
    assert '"kind": "qwen3-reranker"' in models.stdout
    export = rerankd_cli(
        "export", "--model", str(finetune), "--family", "qwen3-reranker",
        "--cache-dir", str(tmp_path), env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert list(tmp_path.rglob("*.onnx"))


def test_asgi_app_reads_family_and_instruction_from_the_environment(
    finetune: Path, expected: np.ndarray, tmp_path: Path
) -> None:
    port = free_port()
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RERANKD_MODEL": str(finetune),
        "RERANKD_FAMILY": "qwen3-reranker",
        "RERANKD_INSTRUCTION": INSTRUCTION,
        "RERANKD_THREADS": "1",
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "rerankd.asgi:app", "--port", str(port)]
    log = tmp_path / "asgi.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(uvicorn, stdout=sink, stderr=subprocess.STDOUT, env=environment)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_healthy(server, 120)
        np.testing.assert_allclose(served_scores(server.url), expected, atol=1e-6)
    finally:
        server.terminate()
        process.wait(timeout=30)
    assert not re.search(r"Traceback", server.logs())
