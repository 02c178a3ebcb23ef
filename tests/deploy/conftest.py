"""Shared pieces of the deployment tests: paths, required tools, and one real rerankd.

The real server is started the way the deployments run it: with Redis for the shared score
cache and rate limits, API keys from a file (the Kubernetes Secret's format), and a rate
limit, so that the metrics the dashboards use exist with their real labels.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.server import ServerProcess, free_port, run_server

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
API_KEY = "deploy-test-key-0123456789"


def require(available: object, what: str) -> None:
    """Skip when a tool is missing on a developer's machine; fail under CI, which must have it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(
            f"{what} is missing, and CI must run this test (see Makefile: install, system-deps)"
        )
    pytest.skip(f"{what} is not installed")


def venv_tool(name: str) -> str:
    """A console script of this environment (hadolint, check-jsonschema, ...), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    require(found, name)
    return str(found)


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def settings_from_env(env: dict[str, str]):
    """Build rerankd's Settings from RERANKD_* variables, as the server does at start-up."""
    from rerankd.config import Settings

    known = {"RERANKD_" + name.upper() for name in Settings.model_fields}
    unknown = sorted(set(env) - known)
    assert not unknown, f"not rerankd settings: {unknown}"
    saved = {k: v for k, v in os.environ.items() if k.startswith("RERANKD_")}
    # The keys file is a Secret mounted in the pod; the server refuses to start on one it cannot
    # read, so here a stand-in with one key is read in its place and the pod's path kept.
    mounted = env.get("RERANKD_API_KEYS_FILE")
    stand_in: Path | None = None
    if mounted and not Path(mounted).exists():
        handle, name = tempfile.mkstemp(suffix=".keys")
        os.close(handle)
        stand_in = Path(name)
        stand_in.write_text("# stand-in for the mounted Secret\nkey-from-the-secret\n")
        env = {**env, "RERANKD_API_KEYS_FILE": name}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update(env)
        settings = Settings()
        if stand_in is not None:
            settings = settings.model_copy(update={"api_keys_file": Path(str(mounted))})
        return settings
    finally:
        if stand_in is not None:
            stand_in.unlink()
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, configured as the deployments do."""
    binary = shutil.which("redis-server")
    require(binary, "redis-server (Debian package redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    command = [
        str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
        "no", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru", "--dir", str(workdir),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def rerankd(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `rerankd serve` for the metric-name, health-check and nginx tests."""
    workdir = tmp_path_factory.mktemp("rerankd-deploy")
    keys = workdir / "api-keys"
    keys.write_text(f"# one key per line, as in the Kubernetes Secret\n{API_KEY}\n")
    env = {
        "RERANKD_REDIS_URL": redis_url,
        "RERANKD_API_KEYS_FILE": str(keys),
        "RERANKD_RATE_LIMIT": "10000/minute",
    }
    with run_server(["--model", "builtin"], env=env, log_dir=workdir) as server:
        yield server


def rerank(base_url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A small native rerank request, with the test API key."""
    body = {
        "query": "how do cats purr",
        "documents": ["Cats purr with their larynx muscles.", "Paris is in France."],
    }
    headers = {"Authorization": f"Bearer {API_KEY}", **(headers or {})}
    return httpx.post(base_url + "/rerank", json=body, headers=headers, timeout=60)
