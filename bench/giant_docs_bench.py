"""Issue 21: a small request's latency while 8 clients send giant documents, and the memory
the server keeps afterwards.

    PYTHONPATH=<tree> python -m bench.giant_docs_bench [--giants 8] [--docs 45] [--chars 199000]
        [--ref main] [--repeats 3]

Starts `python -m rerankd serve` (from whatever tree PYTHONPATH names first, so the same
script measures main and a branch) with a tiny BERT cross-encoder at --max-length 512,
measures a 2-document request alone, then while `--giants` clients loop requests of
`--docs` documents of `--chars` characters each, then reads VmHWM / VmRSS from /proc after
the load and 3 s later (after malloc_trim, where the server does it). Prints one JSON line per
run; with `--ref` the same runs against a git ref's rerankd (as `bench.fairness` does), the
two alternating so that load from other work on a shared machine falls on both alike, and a
last line with each tree's medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.server import run_server

REPO = Path(__file__).resolve().parent.parent


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of `pid` in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) // 1024
    return found


def small_latencies(url: str, count: int) -> list[float]:
    body = {"query": "what is reranking", "documents": ["a short passage", "another one"]}
    times = []
    with httpx.Client(timeout=300) as client:
        for i in range(count):
            body["query"] = f"what is reranking {i}"  # never a cache hit
            started = time.perf_counter()
            response = client.post(url + "/rerank", json=body)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return times


def measure(
    args: argparse.Namespace, model: Path, work: Path, tree: Path | None
) -> dict[str, object]:
    """One run against the rerankd of `tree` (None: whatever PYTHONPATH names first)."""
    words = "reranking puts the most relevant passages first for the generator "
    giant_text = (words * (args.chars // len(words) + 1))[: args.chars]
    server_args = ["--model", str(model), "--max-length", "512", "--cache-entries", "0"]
    server_args += ["--embedding-cache-mb", "0", "--request-timeout", str(args.request_timeout)]
    env = None if tree is None else {"PYTHONPATH": f"{tree}{os.pathsep}{REPO}"}
    with run_server(server_args, log_dir=work, env=env) as server:
        pid = server.process.pid
        small_latencies(server.url, 3)  # warm up
        alone = small_latencies(server.url, args.small)
        idle = proc_status(pid)
        stop = threading.Event()
        statuses: list[int] = []

        def giant(index: int) -> None:
            with httpx.Client(timeout=600) as client:
                n = 0
                while not stop.is_set():
                    docs = [f"{index} {n} {d} " + giant_text for d in range(args.docs)]
                    response = client.post(
                        server.url + "/rerank", json={"query": "q", "documents": docs}
                    )
                    statuses.append(response.status_code)
                    n += 1

        threads = [threading.Thread(target=giant, args=(i,)) for i in range(args.giants)]
        for thread in threads:
            thread.start()
        time.sleep(5)  # let the giants fill the server
        loaded = small_latencies(server.url, args.small)
        stop.set()
        for thread in threads:
            thread.join()
        after = proc_status(pid)
        time.sleep(3)
        settled = proc_status(pid)
    alone_p50, loaded_p50 = statistics.median(alone), statistics.median(loaded)
    return {
        "small_alone_p50_s": round(alone_p50, 4),
        "small_loaded_p50_s": round(loaded_p50, 4),
        "small_loaded_max_s": round(max(loaded), 4),
        "ratio_p50": round(loaded_p50 / alone_p50, 2),
        "giant_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "idle_mib": idle,
        "after_load_mib": after,
        "after_3s_mib": settled,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--giants", type=int, default=8)
    parser.add_argument("--docs", type=int, default=45)
    parser.add_argument("--chars", type=int, default=199_000)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ref", help="also run this git ref's rerankd (e.g. main)")
    args = parser.parse_args()

    from bench.fairness import _ref_tree
    from rerankd.devtools.synthetic import build_bert_cross_encoder

    work = Path(tempfile.mkdtemp(prefix="giant-bench-"))
    model = build_bert_cross_encoder(work / "bert")
    trees: dict[str, Path | None] = {"this tree": None}
    if args.ref:
        trees[args.ref] = _ref_tree(args.ref)
    runs: dict[str, list[dict[str, object]]] = {label: [] for label in trees}
    for _ in range(args.repeats):
        for label, tree in trees.items():
            result = measure(args, model, work, tree)
            runs[label].append(result)
            print(label, json.dumps(result), flush=True)
    medians = {
        label: {
            key: statistics.median(float(r[key]) for r in results)  # type: ignore[arg-type]
            for key in ("small_alone_p50_s", "small_loaded_p50_s", "ratio_p50")
        }
        for label, results in runs.items()
    }
    print("medians", json.dumps(medians), flush=True)


if __name__ == "__main__":
    main()
