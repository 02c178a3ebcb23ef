"""A model baked into the image serves from a read-only /data (Kubernetes: readOnlyRootFilesystem).

The Dockerfile's own bake step runs, for both variants, against a Hugging Face cache laid out
as a hub download leaves it (a tiny cross-encoder stands in for bge-reranker-v2-m3); then
rerankd serves the cpu variant's result (the weights from the Hugging Face cache, the graph
from the ONNX cache) with the directory mounted read-only in a private mount namespace, so
that any write at start-up would fail the start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.deploy.test_dockerfile import env_of, instructions
from tests.server import free_port

MODEL = "acme/tiny-reranker"
REVISION = "0123456789abcdef0123456789abcdef01234567"
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'


def can_mount_read_only() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", READ_ONLY, "sh", "/tmp", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not can_mount_read_only(), reason="needs root and mount namespaces (unshare -m)"
)


def image_env(data: Path, variant: str) -> dict[str, str]:
    """The image's environment (paths moved under `data`), as the container would have it."""
    env = {**env_of("runtime"), **env_of(f"variant-{variant}")}
    env = {k: v.replace("/data", str(data)) for k, v in env.items() if k != "PATH"}
    env["HOME"] = str(data)
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env["HF_HUB_OFFLINE"] = "1"  # the test's stand-in for a hub download is already in place
    return {**os.environ, **env}


def bake(data: Path, variant: str) -> None:
    """The Dockerfile's bake step, run by sh as `docker build` would."""
    (step,) = [i.args for i in instructions() if i.keyword == "RUN" and "BAKE_MODEL" in i.args]
    result = subprocess.run(
        ["sh", "-c", step.removeprefix("RUN ")],
        env={**image_env(data, variant), "BAKE_MODEL": MODEL, "BAKE_INT8": "0"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/data after the bake step: weights in HF_HOME, and (cpu) the ONNX export."""
    from rerankd.devtools.synthetic import build_xlmr_cross_encoder

    data = tmp_path_factory.mktemp("data")
    repo = Path(image_env(data, "cpu")["HF_HOME"]) / "hub" / f"models--{MODEL.replace('/', '--')}"
    build_xlmr_cross_encoder(repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    exports = data / "cache" / "rerankd" / "onnx"
    bake(data, "cuda")  # torch serves from the weights: nothing to export
    assert not exports.exists()
    bake(data, "cpu")
    assert list(exports.glob("*/model.onnx"))
    return data


@contextmanager
def serve_read_only(data: Path, variant: str) -> Iterator[str]:
    port = free_port()
    env = {**image_env(data, variant), "RERANKD_MODEL": MODEL, "RERANKD_DEVICE": "cpu"}
    env.update({"RERANKD_HOST": "127.0.0.1", "RERANKD_PORT": str(port)})
    log = data.parent / f"serve-{variant}.log"
    command = [sys.executable, "-m", "rerankd", "serve"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", READ_ONLY, "sh", str(data), *command],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"rerankd exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"rerankd did not become ready:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_baked_model_serves_from_read_only_data(baked: Path) -> None:
    with serve_read_only(baked, "cpu") as url:
        response = httpx.post(
            url + "/rerank", json={"query": "cats", "documents": ["a cat", "a car"]}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == MODEL
        assert "onnx" in httpx.get(url + "/info", timeout=10).text.lower()
