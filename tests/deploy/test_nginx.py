"""deploy/nginx/rerankd.conf: `nginx -t` passes, and it proxies to a running rerankd.

The example is used as written; only its two addresses change (the upstream server becomes the
test's rerankd, the listen address a free loopback port), inside a minimal nginx.conf whose
paths all live in a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import API_KEY, DEPLOY, require, rerank, settings_from_env
from tests.server import ServerProcess, free_port

CONFIG = DEPLOY / "nginx" / "rerankd.conf"


def directive(name: str) -> list[str]:
    text = re.sub(r"#.*", "", CONFIG.read_text())
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.MULTILINE)


def size_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[unit]


def test_limits_match_rerankd_defaults() -> None:
    defaults = settings_from_env({})
    (body,) = directive("client_max_body_size")
    assert size_bytes(body) == defaults.max_body_bytes
    (read,) = directive("proxy_read_timeout")
    assert defaults.request_timeout < seconds(read) <= defaults.request_timeout + 10
    for name in ("proxy_send_timeout", "client_body_timeout", "send_timeout"):
        (value,) = directive(name)
        assert seconds(value) == defaults.request_timeout, name
    # nginx must drop an idle upstream connection before rerankd (uvicorn) closes it.
    (keepalive,) = directive("keepalive_timeout")
    assert seconds(keepalive) < defaults.keep_alive_timeout
    # The example names the defaults it matches in its header.
    header = CONFIG.read_text()
    assert f"--max-body-bytes {defaults.max_body_bytes}" in header
    assert f"--request-timeout {defaults.request_timeout:g}" in header
    assert f"--drain-seconds {defaults.drain_seconds:g}" in header


def nginx_binary() -> str:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).is_file()), None
    )
    require(binary, "nginx (Debian package nginx)")
    return str(binary)


def write_config(root: Path, upstreams: list[str], port: int) -> Path:
    site = CONFIG.read_text()
    lines = " ".join(f"server {address};" for address in upstreams)
    site, servers = re.subn(r"server rerankd:8000;", lines, site)
    site, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", site)
    assert servers == 1 and listens == 1, "the example's addresses changed: update this test"
    (root / "rerankd.conf").write_text(site)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / f"{name}_temp").mkdir(exist_ok=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers may read the temp dirs
    main = root / "nginx.conf"
    main.write_text(
        f"""{user}worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body_temp;
    proxy_temp_path {root}/proxy_temp;
    fastcgi_temp_path {root}/fastcgi_temp;
    uwsgi_temp_path {root}/uwsgi_temp;
    scgi_temp_path {root}/scgi_temp;
    include {root}/rerankd.conf;
}}
"""
    )
    return main


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = nginx_binary()
    main = write_config(tmp_path, ["127.0.0.1:8000"], free_port())
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(main)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


@contextmanager
def running_nginx(root: Path, upstreams: list[str]) -> Iterator[str]:
    """nginx with the example config in front of `upstreams`; yields its base URL."""
    nginx = nginx_binary()
    port = free_port()
    main = write_config(root, upstreams, port)
    command = [nginx, "-p", str(root), "-e", "stderr", "-c", str(main), "-g", "daemon off;"]
    log = root / "stderr.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {log.read_text()}") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy(rerankd: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx with the example config in front of the shared test rerankd."""
    with running_nginx(
        tmp_path_factory.mktemp("nginx"), [rerankd.url.removeprefix("http://")]
    ) as url:
        yield url


@contextmanager
def draining_replica() -> Iterator[tuple[str, list[str]]]:
    """A stand-in for a rerankd replica that is draining: 503 and rerankd's error body."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.path)
            body = json.dumps(
                {
                    "error": {
                        "message": "the server is shutting down",
                        "type": "NotReady",
                        "code": 503,
                    }
                }
            ).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_rerank_request_through_nginx(proxy: str) -> None:
    response = rerank(proxy, headers={"X-Request-ID": "req-from-client"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1]
    assert results[0]["score"] > results[1]["score"]
    assert response.headers["x-request-id"] == "req-from-client"  # the client's id is kept


def test_nginx_gives_requests_an_id(proxy: str) -> None:
    response = rerank(proxy)
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_health_passes_and_metrics_stay_private(proxy: str) -> None:
    health = httpx.get(proxy + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["model_loaded"] is True
    assert httpx.get(proxy + "/metrics", timeout=10).status_code == 404


def test_rerankd_errors_pass_through_unchanged(proxy: str) -> None:
    response = httpx.post(proxy + "/rerank", json={"query": "q", "documents": ["d"]}, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401
    assert response.headers["www-authenticate"] == "Bearer"


def padded_body(size: int) -> bytes:
    """A valid rerank request of exactly `size` bytes (JSON allows any trailing whitespace)."""
    body = b'{"query": "how do cats purr", "documents": ["Cats purr."]}'
    return body + b" " * (size - len(body))


def test_the_body_limit_is_rerankds(proxy: str) -> None:
    limit = settings_from_env({}).max_body_bytes
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    at_limit = httpx.post(
        proxy + "/rerank", content=padded_body(limit), headers=headers, timeout=60
    )
    assert at_limit.status_code == 200, at_limit.text
    over = httpx.post(
        proxy + "/rerank", content=padded_body(limit + 1), headers=headers, timeout=60
    )
    assert over.status_code == 413


def test_a_draining_replica_is_skipped(rerankd: ServerProcess, tmp_path: Path) -> None:
    with draining_replica() as (draining, seen):
        upstreams = [draining, rerankd.url.removeprefix("http://")]
        with running_nginx(tmp_path, upstreams) as url:
            # nginx's round robin starts with the first server: the draining one.
            response = rerank(url)
    assert response.status_code == 200, response.text
    assert response.json()["results"]
    assert seen == ["/rerank"]


def test_the_last_replicas_503_reaches_the_client(tmp_path: Path) -> None:
    with draining_replica() as (draining, seen), running_nginx(tmp_path, [draining]) as url:
        response = rerank(url)
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "the server is shutting down"
    assert seen == ["/rerank"]
