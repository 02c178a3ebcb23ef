"""A model that cannot be found is said so in plain words: what was tried, and the next step.

`rerankd serve` runs for real; the hub is a real HTTP server on 127.0.0.1 (HF_ENDPOINT)
answering as the Hugging Face hub does for a missing or gated model, or a closed port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rerankd.errors import ModelNotFound
from rerankd.families import resolve
from rerankd.models import ModelSpec
from rerankd.registry.spec import Registration
from tests.server import free_port

RAW = ("String should match pattern", "validation error", "huggingface-cli", "Traceback")


def plain(message: str) -> None:
    assert "Next step:" in message, message
    assert not any(raw in message for raw in RAW), message


def serve_fails(spec: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """`rerankd serve --model SPEC`: it must stop by itself, with the message in its log."""
    command = [
        sys.executable,
        "-m",
        "rerankd",
        "serve",
        "--model",
        spec,
        "--port",
        str(free_port()),
    ]
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), **(env or {})},
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_serve_a_missing_directory_says_no_such_directory(tmp_path: Path) -> None:
    log = serve_fails("/nonexistent", tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert "no directory '/nonexistent'" in log and "never looked up on the Hugging Face hub" in log
    assert "String should match pattern" not in log


def test_the_readme_finetuned_model_before_finetuning(tmp_path: Path) -> None:
    log = serve_fails("./reranker-legal", tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert f"no directory './reranker-legal' (looked for {tmp_path / 'reranker-legal'})" in log
    assert "`rerankd finetune ... --output ./reranker-legal` has finished" in log
    assert "String should match pattern" not in log


@pytest.mark.parametrize("source", ["bad id!", "org/name with spaces", "a--b/c"])
def test_a_malformed_id_is_neither_a_directory_nor_an_id(source: str) -> None:
    with pytest.raises(ModelNotFound) as error:
        resolve(ModelSpec(source))
    message = str(error.value)
    assert f"{source!r} is neither a local directory nor a Hugging Face model id" in message
    plain(message)


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ModelNotFound, match="is a file, not a model directory"):
        resolve(ModelSpec(str(tmp_path / "model.bin")))


def test_an_offline_cache_miss_names_hf_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as error:
        resolve(ModelSpec("no-such-org/no-such-reranker"))
    message = str(error.value)
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in message
    assert "`hf download no-such-org/no-such-reranker`" in message
    plain(message)


def test_a_registration_names_its_model_id_not_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "legal"
    registration = Registration(
        model_name="legal", model_uri=str(missing), model_id="BAAI/bge-reranker-base"
    )
    with pytest.raises(ModelNotFound) as error:
        resolve(registration.model_spec)
    message = str(error.value)
    assert f"no directory {str(missing)!r}" in message
    assert f"`hf download BAAI/bge-reranker-base --local-dir {missing}`" in message
    assert "model_id 'BAAI/bge-reranker-base'" in message
    plain(message)


class FakeHub(BaseHTTPRequestHandler):
    """Answers every request as the hub answers for a model it lacks (or gates)."""

    error_code = "RepoNotFound"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status = 401 if self.error_code == "RepoNotFound" else 403
        body = b'{"error": "Repository not found"}'
        self.send_response(status)
        self.send_header("X-Error-Code", self.error_code)
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[tuple[str, type[FakeHub]]]:
    handler = type("Hub", (FakeHub,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def resolve_online(source: str, endpoint: str, home: Path) -> str:
    """Resolve in a fresh process: huggingface_hub reads HF_ENDPOINT when it is imported."""
    code = (
        "from rerankd.families import resolve\nfrom rerankd.models import ModelSpec\n"
        f"try:\n    resolve(ModelSpec({source!r}))\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_model_the_hub_lacks_says_check_the_id(hub, tmp_path: Path) -> None:
    url, _ = hub
    out = resolve_online("no-such-org/no-such-reranker", url, tmp_path)
    assert out.startswith("ModelNotFound")
    assert "the Hugging Face hub has no model 'no-such-org/no-such-reranker'" in out
    assert "could not be reached" not in out
    plain(out)


def test_a_gated_model_says_log_in(hub, tmp_path: Path) -> None:
    url, handler = hub
    handler.error_code = "GatedRepo"
    out = resolve_online("meta-llama/gated-reranker", url, tmp_path)
    assert "is gated on the Hugging Face hub" in out and "`hf auth login`" in out
    plain(out)


def test_an_unreachable_hub_is_not_a_missing_model(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = resolve_online("BAAI/bge-reranker-v2-m3", closed, tmp_path)
    assert out.startswith("ModelNotFound")
    assert "the Hugging Face hub could not be reached" in out
    assert "the id may well be right" in out and "has no model" not in out
    assert "`hf download BAAI/bge-reranker-v2-m3`" in out
    plain(out)
