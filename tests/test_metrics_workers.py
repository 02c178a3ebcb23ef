"""`/metrics` under real gunicorn with two workers adds up both, with nothing configured.

rerankd turns on prometheus-client's multiprocess mode itself (`rerankd.multiproc`): the
operator runs only `gunicorn -w 2 -k uvicorn.workers.UvicornWorker rerankd.asgi:app`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import metric
from tests.test_asgi import DOCUMENTS, QUERY, _is_json, start_gunicorn, stop

REQUESTS = 24


@pytest.fixture(scope="module")
def gunicorn_pair(
    bert_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Path]]:
    folder = tmp_path_factory.mktemp("gunicorn-metrics")
    tmp = folder / "tmp"
    tmp.mkdir()
    log = folder / "gunicorn.log"
    process, url = start_gunicorn(2, {"RERANKD_MODEL": str(bert_model), "TMPDIR": str(tmp)}, log)
    try:
        ready: set[int] = set()
        deadline = time.monotonic() + 180
        while len(ready) < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"workers not ready:\n{log.read_text()}"
            try:
                info = httpx.get(url + "/info", timeout=5).json()
                if info["ready"]:
                    ready.add(info["pid"])
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, log, tmp
    finally:
        stop(process)


def test_every_scrape_counts_the_requests_of_both_workers(
    gunicorn_pair: tuple[str, Path, Path],
) -> None:
    url, log, tmp = gunicorn_pair
    for i in range(REQUESTS):  # a new connection each time: either worker may answer
        body = {"query": f"{QUERY} {i}", "documents": DOCUMENTS}  # distinct: none cached
        response = httpx.post(url + "/rerank", json=body)
        assert response.status_code == 200, response.text
    served_by = {
        entry["pid"]
        for entry in map(json.loads, filter(_is_json, log.read_text().splitlines()))
        if entry.get("route") == "/rerank" and entry.get("status") == 200
    }
    assert len(served_by) == 2, "both workers served (else the sum proves nothing)"
    for _ in range(8):
        text = httpx.get(url + "/metrics").text
        assert metric(text, "rerankd_requests_total", 'route="/rerank",status="200"') == REQUESTS
        assert metric(text, "rerankd_pairs_scored_total") == REQUESTS * len(DOCUMENTS)
        assert metric(text, "rerankd_ready") == 1.0
        assert metric(text, "rerankd_requests_in_flight") == 0.0
    shared = list(tmp.glob("rerankd-metrics-*"))
    assert len(shared) == 1 and list(shared[0].glob("counter_*.db")), "set up by rerankd"
