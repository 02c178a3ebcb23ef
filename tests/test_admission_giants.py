"""Issue 21's giant-document load against a real server: admission refuses what does not fit
(429 + Retry-After, before tokenizing) while small requests are still answered."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.server import run_server

WORDS = "reranking puts the most relevant passages first for the generator "
GIANT = (WORDS * 800)[:50_000]  # 50,000 characters: far past 128 tokens


def test_giant_documents_get_429_from_admission_while_small_requests_succeed(
    bert_model: Path, tmp_path: Path
) -> None:
    # One giant request is estimated at 45 x 128 tokens (each document capped at what the
    # model runs): the queue holds one, a second one sent meanwhile is refused.
    args = ["--model", str(bert_model), "--max-length", "128", "--max-queue-tokens", "8000"]
    args += ["--cache-entries", "0"]
    with run_server(args, log_dir=tmp_path) as server:
        stop = threading.Event()
        small_statuses: list[int] = []

        def giant(index: int) -> httpx.Response:
            documents = [f"{index} {d} {GIANT}" for d in range(45)]
            body = {"query": "what is reranking", "documents": documents}
            return httpx.post(f"{server.url}/rerank", json=body, timeout=120)

        def small() -> None:
            body = {"query": "what is reranking", "documents": ["a passage", "another"]}
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    response = client.post(f"{server.url}/rerank", json=body)
                    small_statuses.append(response.status_code)

        smalls = threading.Thread(target=small)
        smalls.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                giants = list(pool.map(giant, range(8)))
        finally:
            stop.set()
            smalls.join()
        statuses = [r.status_code for r in giants]
        assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
        refused = next(r for r in giants if r.status_code == 429)
        assert float(refused.headers["retry-after"]) >= 1
        assert "queue holds" in refused.text
        assert small_statuses and set(small_statuses) == {200}, small_statuses
