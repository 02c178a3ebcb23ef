"""Issue 19: how fast a fleet converges on a launch and a terminate made through one process.

Three `rerankd serve` processes (own data directories, one Redis on a free port) serve a tiny
cross-encoder built here. Each round registers nothing new: it launches one registration
through process `round % 3` (`wait_ready=false`), then polls `/v1/rerank` for the model on
every process (a thread per process, back to back) until all three answer 200; then it
terminates through the next process and polls until all three answer 404. Reported: p50/max
seconds of each convergence over the rounds, and the share of 503s among the answers while a
launch converged (a 404 there would be a bug and is counted apart).

    python -m bench.fleet_bench                # 10 rounds
    python -m bench.fleet_bench --rounds 5

Writes bench/results/fleet_bench.json. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench import machine
from bench.servers import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "fleet_bench.json"
BODY = {"query": "Where is Paris?", "documents": ["Paris is in France.", "Bananas are yellow."]}


def _redis(folder: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    process.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    return process


def _serve(stack: ExitStack, root: Path, index: int, redis_url: str, model: Path) -> str:
    port = free_port()
    command = [
        sys.executable, "-m", "rerankd", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--model", f"{model}=first", "--max-length", "64", "--redis-url", redis_url,
        "--data-dir", str(root / f"data-{index}"), "--model-roots", str(root),
    ]  # fmt: skip
    log = (root / f"server-{index}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(lambda: (process.terminate(), process.wait(30), log.close()))
    return f"http://127.0.0.1:{port}"


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not healthy")


def _converge(urls: list[str], uid: str, want: int) -> tuple[float, Counter[int]]:
    """Seconds until every process answers `want` for `uid`; every status seen meanwhile."""
    started = time.perf_counter()
    done: dict[str, float] = {}
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def poll(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                status = http.post("/v1/rerank", json={**BODY, "model": uid}).status_code
                with lock:
                    seen[status] += 1
                if status == want:
                    done[url] = time.perf_counter() - started
                    return

    threads = [threading.Thread(target=poll, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return max(done.values()), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    from rerankd.devtools.synthetic import build_bert_cross_encoder

    root = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    model = build_bert_cross_encoder(root / "tiny-bert")
    launches: list[float] = []
    terminates: list[float] = []
    while_launching: Counter[int] = Counter()
    while_terminating: Counter[int] = Counter()
    with ExitStack() as stack:
        redis = _redis(root)
        stack.callback(lambda: (redis.kill(), redis.wait()))
        urls = [_serve(stack, root, i, redis.url, model) for i in range(3)]  # type: ignore[attr-defined]
        for url in urls:
            _wait_healthy(url)
        spec = {"model_name": "bench-model", "model_uri": str(model), "language": ["en"]}
        body = {"model": json.dumps(spec), "persist": True}
        httpx.post(f"{urls[0]}/v1/model_registrations/rerank", json=body).raise_for_status()
        for round_ in range(args.rounds):
            via = urls[round_ % 3]
            launched = httpx.post(
                f"{via}/v1/models?wait_ready=false",
                json={"model_name": "bench-model", "model_uid": f"bench-{round_}"},
                timeout=120,
            )
            launched.raise_for_status()
            seconds, seen = _converge(urls, f"bench-{round_}", 200)
            launches.append(seconds)
            while_launching.update(seen)
            terminated = httpx.delete(f"{urls[(round_ + 1) % 3]}/v1/models/bench-{round_}")
            terminated.raise_for_status()
            seconds, seen = _converge(urls, f"bench-{round_}", 404)
            terminates.append(seconds)
            while_terminating.update(seen)
            print(f"round {round_}: launch {launches[-1]:.2f}s, terminate {terminates[-1]:.2f}s")
    answers = sum(while_launching.values())
    result = {
        "machine": machine.describe(),
        "rounds": args.rounds,
        "launch_converged_s": _summary(launches),
        "terminate_converged_s": _summary(terminates),
        "while_launching": dict(while_launching),
        "share_503_while_launching": round(while_launching[503] / answers, 3) if answers else 0,
        "while_terminating": dict(while_terminating),
        "note": "poll interval 0.25 s; launch time includes loading the model on each process",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}


if __name__ == "__main__":
    main()
