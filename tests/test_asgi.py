"""rerankd.asgi:app under real gunicorn (UvicornWorker), and how the worker count is found.

The gunicorn tests start the `gunicorn` console script of this environment, as an operator
would, with two workers on the built-in model, and read each worker's answers: both serve
/rerank (the JSON log line of each request carries its worker's pid) and each reports in
/info that it runs cores / 2 inference threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from rerankd.config import Settings
from rerankd.workers import detect_workers, server_name, share_cores
from tests.server import free_port

GUNICORN = Path(sys.executable).parent / "gunicorn"
CORES = len(os.sched_getaffinity(0))
QUERY = "What is the capital of France?"
# Variables that would change the worker count or threads under test: never inherited.
WORKER_SETTINGS = ("RERANKD_WORKERS", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "RERANKD_THREADS")
DOCUMENTS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]


# How the worker count is found ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/venv/bin/gunicorn", "rerankd.asgi:app"], "gunicorn"),
        (["/venv/lib/site-packages/gunicorn/__main__.py", "-w", "2"], "gunicorn"),
        (["/venv/bin/uvicorn", "rerankd.asgi:app"], "uvicorn"),
        (["/venv/lib/site-packages/uvicorn/__main__.py", "app"], "uvicorn"),
        (["/venv/bin/rerankd", "serve"], None),
        ([], None),
    ],
)
def test_the_server_is_recognised_from_its_command(argv: list[str], expected: str | None) -> None:
    assert server_name(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "3", "rerankd.asgi:app"],
        ["gunicorn", "--workers=3", "rerankd.asgi:app"],
        ["uvicorn", "rerankd.asgi:app", "--workers", "3"],
    ],
)
def test_the_worker_count_is_read_from_the_servers_arguments(argv: list[str]) -> None:
    count, source = detect_workers(argv, {})
    assert count == 3
    assert argv[0] in source


def test_gunicorn_cmd_args_count_as_gunicorn_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 4")
    assert detect_workers(["gunicorn", "rerankd.asgi:app"], {})[0] == 4


def test_rerankd_workers_wins_and_web_concurrency_is_the_fallback() -> None:
    argv = ["gunicorn", "-w", "3", "rerankd.asgi:app"]
    assert detect_workers(argv, {"RERANKD_WORKERS": "5"}) == (5, "RERANKD_WORKERS")
    assert detect_workers(["python"], {"WEB_CONCURRENCY": "6"}) == (6, "WEB_CONCURRENCY")
    assert detect_workers(["python"], {})[0] == 1
    with pytest.raises(ValueError, match="RERANKD_WORKERS"):
        detect_workers(argv, {"RERANKD_WORKERS": "two"})


def test_cpu_threads_are_shared_out_unless_set_explicitly() -> None:
    settings, share = share_cores(Settings(), ["python"], {"RERANKD_WORKERS": "2"})
    assert share.threads == settings.threads == max(1, CORES // 2)
    settings, share = share_cores(Settings(replicas=2), ["python"], {"RERANKD_WORKERS": "2"})
    assert settings.threads == max(1, CORES // 4)
    settings, share = share_cores(Settings(threads=3), ["python"], {"RERANKD_WORKERS": "2"})
    assert settings.threads == share.threads == 3
    settings, share = share_cores(Settings(), ["python"], {})
    assert settings.threads is None and share.workers == 1  # one worker: every core
    settings, share = share_cores(Settings(device="cuda"), ["python"], {"RERANKD_WORKERS": "2"})
    assert settings.threads is None  # a GPU worker's CPU threads only feed the GPU


# Real gunicorn -------------------------------------------------------------------------------


def start_gunicorn(workers: int, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    if not GUNICORN.is_file():
        pytest.fail("gunicorn is missing from the environment (pip install -e '.[dev]')")
    port = free_port()
    command = [
        str(GUNICORN), "-k", "uvicorn.workers.UvicornWorker", "-w", str(workers),
        "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "rerankd.asgi:app",
    ]  # fmt: skip
    inherited = {k: v for k, v in os.environ.items() if k not in WORKER_SETTINGS}
    full_env = {**inherited, "HF_HUB_OFFLINE": "1", **env}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=full_env)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def gunicorn_two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    process, url = start_gunicorn(2, {"RERANKD_MODEL": "builtin"}, log)
    try:
        ready: set[int] = set()
        deadline = time.monotonic() + 180
        while len(ready) < 2:  # every worker loads its own model: wait for both
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"workers not ready:\n{log.read_text()}"
            try:
                info = httpx.get(url + "/info", timeout=5).json()  # a new connection each time
                if info["ready"]:
                    ready.add(info["pid"])
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, log
    finally:
        stop(process)


def infos_by_worker(url: str, attempts: int = 200) -> dict[int, dict]:
    seen: dict[int, dict] = {}
    for _ in range(attempts):
        info = httpx.get(url + "/info", timeout=10).json()
        seen[info["pid"]] = info
        if len(seen) == 2:
            break
    return seen


def test_each_gunicorn_worker_takes_half_the_cores(gunicorn_two_workers: tuple[str, Path]) -> None:
    url, _ = gunicorn_two_workers
    seen = infos_by_worker(url)
    assert len(seen) == 2, "both workers should answer"
    for info in seen.values():
        assert info["workers"]["workers"] == 2
        assert "gunicorn" in info["workers"]["source"]
        assert info["models"][0]["threads"] == max(1, CORES // 2)
        if CORES >= 2:
            assert info["models"][0]["threads"] < CORES  # not every core in every worker


def test_both_gunicorn_workers_serve_rerank(gunicorn_two_workers: tuple[str, Path]) -> None:
    url, log = gunicorn_two_workers
    expected = httpx.post(url + "/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()

    def call(_: int) -> dict:
        response = httpx.post(
            url + "/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=60
        )
        assert response.status_code == 200, response.text
        return response.json()

    pids: set[int] = set()
    with ThreadPoolExecutor(4) as pool:
        for _ in range(10):  # at most 10 rounds of 8 requests, each on a new connection
            for body in pool.map(call, range(8)):
                assert [r["index"] for r in body["results"]] == [
                    r["index"] for r in expected["results"]
                ]
                assert [r["score"] for r in body["results"]] == pytest.approx(
                    [r["score"] for r in expected["results"]], abs=1e-5
                )
            pids = {
                entry["pid"]
                for entry in map(json.loads, filter(_is_json, log.read_text().splitlines()))
                if entry.get("route") == "/rerank" and entry.get("status") == 200
            }
            if len(pids) == 2:
                break
    assert len(pids) == 2, "both workers should have served /rerank"
    assert expected["results"][0]["index"] == 0


def test_a_model_that_cannot_load_stops_gunicorn(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    missing = tmp_path / "no-such-model"
    process, _ = start_gunicorn(2, {"RERANKD_MODEL": str(missing)}, log)
    try:
        code = process.wait(timeout=120)  # halts instead of respawning workers forever
    finally:
        stop(process)
    assert code != 0
    assert "could not be loaded" in log.read_text()


def _is_json(line: str) -> bool:
    return line.startswith("{")
