"""SIGTERM drains: in-flight work finishes, new work is refused, the process exits 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.server import run_server


def test_sigterm_lets_in_flight_requests_finish(xlmr_model: Path, tmp_path: Path) -> None:
    args = [
        "--model",
        str(xlmr_model),
        "--threads",
        "1",
        "--max-batch-tokens",
        "1024",
        "--drain-seconds",
        "60",
    ]
    documents = [f"document {i} " + "tokens for a slow request " * 90 for i in range(200)]
    with run_server(args, log_dir=tmp_path) as server:
        outcome: dict[str, object] = {}

        def slow_request() -> None:
            started = time.perf_counter()
            response = httpx.post(
                server.url + "/rerank", json={"query": "q", "documents": documents}, timeout=120
            )
            outcome["status"] = response.status_code
            outcome["results"] = len(response.json()["results"])
            outcome["seconds"] = time.perf_counter() - started

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.5)
        server.terminate(signal.SIGTERM)
        time.sleep(0.2)
        assert worker.is_alive(), "the request should still be running when SIGTERM arrives"
        health = httpx.get(server.url + "/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = httpx.post(
            server.url + "/rerank", json={"query": "q", "documents": ["d"]}, timeout=5
        )
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
        worker.join(timeout=120)
        assert outcome["status"] == 200 and outcome["results"] == 200
        assert server.process.wait(timeout=30) == 0
        print(f"slow request took {outcome['seconds']:.1f}s")
