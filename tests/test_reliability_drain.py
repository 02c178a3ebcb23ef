"""SIGTERM under load: every request in flight finishes, later ones get a clean 503 that closes
the connection, nothing is cut mid-response, and the process exits 0 within the drain time."""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.server import ServerProcess, run_server

CLIENTS = 8
DRAIN_SECONDS = 30
DOCUMENTS = [
    f"passage {i} about the drain test " + "filler words " * (10 + 7 * i) for i in range(16)
]


@dataclass
class Outcome:
    status: int | None
    connection: str | None
    finished: float
    error: str | None = None
    body: dict = field(default_factory=dict)


def _client(server: ServerProcess, outcomes: list[Outcome], stop: threading.Event) -> None:
    """Keep one keep-alive connection busy until the server says it is draining."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        while not stop.is_set():
            try:
                response = client.post("/rerank", json={"query": "q", "documents": DOCUMENTS})
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(None, None, time.monotonic(), repr(exc)))
                return
            outcomes.append(
                Outcome(
                    response.status_code,
                    response.headers.get("connection"),
                    time.monotonic(),
                    body=response.json(),
                )
            )
            if response.status_code == 503:
                return  # as a load balancer would: this replica is going away


def test_sigterm_under_load_loses_no_request(xlmr_model: Path, tmp_path: Path) -> None:
    args = ["--model", str(xlmr_model), "--threads", "1", "--cache-entries", "0"]
    args += ["--drain-seconds", str(DRAIN_SECONDS)]
    with run_server(args, log_dir=tmp_path) as server:
        outcomes: list[Outcome] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_client, args=(server, outcomes, stop), daemon=True)
            for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while sum(o.status == 200 for o in outcomes) < CLIENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        signalled = time.monotonic()
        server.terminate(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=DRAIN_SECONDS + 30)
        stop.set()
        assert server.process.wait(timeout=DRAIN_SECONDS + 10) == 0
        exited = time.monotonic()

    errors = [o.error for o in outcomes if o.error is not None]
    assert errors == [], "no request may be cut or reset"
    served = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    assert len(served) + len(refused) == len(outcomes), {o.status for o in outcomes}
    assert all(len(o.body["results"]) == len(DOCUMENTS) for o in served)
    assert any(o.finished > signalled for o in served), "requests in flight at SIGTERM finish"
    assert len(refused) == CLIENTS
    for outcome in refused:
        assert outcome.connection == "close"
        assert outcome.body["error"]["type"] == "not_ready"
        assert "shutting down" in outcome.body["error"]["message"]
    # Responses finished during the drain close their connection too.
    assert all(o.connection == "close" for o in served if o.finished > signalled + 0.5)
    print(
        f"{len(served)} served, {len(refused)} refused while draining; "
        f"exit {exited - signalled:.1f}s after SIGTERM"
    )

    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    draining = [e for e in lines if e.get("status") == 503 and e.get("route") != "/health"]
    assert draining and all(line["route"] == "/rerank" for line in draining)
    assert not any(line.get("route") == "unmatched" for line in lines)
