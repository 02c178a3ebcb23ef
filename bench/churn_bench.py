"""Issue 19: a steady load on model A while model B is launched and terminated over and over.

Three `rerankd serve` processes (bench/fleet_bench.py's: own data directories, one Redis on a
free port) serve model A (a tiny cross-encoder built here, `first`). Clients send a steady
closed-loop load of /v1/rerank for A to a random process. Phases, one after the other:
quiet, churn, quiet. During churn, model B (MiniLM-L6's shape from bench/fixtures.py) is
launched through one process (`wait_ready=false`), polled until every process serves it, then
terminated through another and polled until every process answers 404, again and again.
Reported for A in each phase: p50/p99 latency, pairs/s and every answer that was not a 200.

    python -m bench.churn_bench                     # 2 clients, 20 s quiet / 40 s churn / 20 s quiet
    python -m bench.churn_bench --seconds 10 --clients 3

Writes bench/results/churn_bench.json. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench import machine
from bench.fixtures import model_dir
from bench.fleet_bench import _converge, _redis, _serve, _wait_healthy

RESULTS = Path(__file__).resolve().parent / "results" / "churn_bench.json"
DOCUMENTS = [f"Passage {i} about the cluster, its pods and their nodes." for i in range(8)]


class Load:
    """Closed-loop clients on model A; what each answer was and how long it took, by phase."""

    def __init__(self, urls: list[str], clients: int) -> None:
        self.urls, self.clients = urls, clients
        self.phase = "warm-up"
        self.samples: dict[str, list[float]] = {}
        self.statuses: dict[str, Counter[str]] = {}
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def run_phase(self, name: str, seconds: float) -> None:
        started = time.perf_counter()
        self.phase = name
        time.sleep(seconds)
        self.phase = "between"
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        clients = {url: httpx.Client(base_url=url, timeout=30) for url in self.urls}
        n = 0
        while not self._stop.is_set():
            n += 1
            body = {"model": "first", "query": f"client {number} query {n}", "documents": DOCUMENTS}
            phase = self.phase
            started = time.perf_counter()
            try:
                response = clients[rng.choice(self.urls)].post("/v1/rerank", json=body)
                outcome = str(response.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            took = time.perf_counter() - started
            with self._lock:
                self.statuses.setdefault(phase, Counter())[outcome] += 1
                if outcome == "200":
                    self.samples.setdefault(phase, []).append(took)
        for client in clients.values():
            client.close()

    def summary(self, phases: list[str]) -> dict[str, Any]:
        latencies = sorted(x for p in phases for x in self.samples.get(p, []))
        statuses: Counter[str] = Counter()
        for p in phases:
            statuses.update(self.statuses.get(p, Counter()))
        seconds = sum(self.seconds[p] for p in phases)
        return {
            "requests": sum(statuses.values()),
            "not_200": {k: v for k, v in statuses.items() if k != "200"},
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(
                1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1
            ),
            "pairs_per_second": round(len(latencies) * len(DOCUMENTS) / seconds, 1),
        }


def churn(urls: list[str], stop: threading.Event, rounds: list[dict[str, Any]]) -> None:
    """Launch B through one process, wait until all serve it; terminate through the next,
    wait until all answer 404; until `stop`."""
    n = 0
    while not stop.is_set():
        via, then = urls[n % 3], urls[(n + 1) % 3]
        uid = f"churn-{n}"
        httpx.post(
            f"{via}/v1/models?wait_ready=false",
            json={"model_name": "model-b", "model_uid": uid},
            timeout=120,
        ).raise_for_status()
        launched, seen_up = _converge(urls, uid, 200)
        httpx.delete(f"{then}/v1/models/{uid}", timeout=120).raise_for_status()
        terminated, seen_down = _converge(urls, uid, 404)
        rounds.append(
            {"launch_s": round(launched, 2), "terminate_s": round(terminated, 2),
             "b_answers": dict(seen_up + seen_down)}
        )  # fmt: skip
        n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each quiet phase; churn 2x")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--model-b", default="minilm-l6")
    args = parser.parse_args()
    from rerankd.devtools.synthetic import build_bert_cross_encoder

    root = Path(tempfile.mkdtemp(prefix="churn-bench-"))
    model_a = build_bert_cross_encoder(root / "tiny-bert")
    model_b = shutil.copytree(model_dir(args.model_b), root / args.model_b)  # under the roots
    rounds: list[dict[str, Any]] = []
    with ExitStack() as stack:
        redis = _redis(root)
        stack.callback(lambda: (redis.kill(), redis.wait()))
        urls = [_serve(stack, root, i, redis.url, model_a) for i in range(3)]  # type: ignore[attr-defined]
        for url in urls:
            _wait_healthy(url)
        spec = {"model_name": "model-b", "model_uri": str(model_b), "language": ["en"]}
        registered = httpx.post(
            f"{urls[0]}/v1/model_registrations/rerank",
            json={"model": json.dumps(spec), "persist": True},
            timeout=60,
        )
        if registered.status_code != 200:
            raise SystemExit(f"registering model B failed: {registered.text}")
        load = Load(urls, args.clients)
        load.start()
        try:
            load.run_phase("warm-up", 3)
            load.run_phase("quiet", args.seconds)
            stop = threading.Event()
            churner = threading.Thread(target=churn, args=(urls, stop, rounds))
            churner.start()
            load.run_phase("churn", 2 * args.seconds)
            stop.set()
            churner.join()
            load.run_phase("quiet", args.seconds)
        finally:
            load.stop()
    result = {
        "machine": machine.describe(),
        "processes": 3,
        "clients": args.clients,
        "documents_per_request": len(DOCUMENTS),
        "model_a": "tiny BERT cross-encoder (rerankd.devtools.synthetic), max_length 64",
        "model_b": f"{args.model_b} (bench/fixtures.py)",
        "without_churn": load.summary(["quiet"]),
        "during_churn": load.summary(["churn"]),
        "churn_rounds": len(rounds),
        "rounds": rounds,
        "note": "A's latency is per request of 8 documents; B's answers are the pollers' "
        "(200 once served, 503 while loading, 404 once terminated)",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "rounds")}, indent=2))


if __name__ == "__main__":
    main()
