"""Where a loaded rerankd server's CPU time goes, by stage, under the benchmark's load (issue 24).

Starts a real server (`bench.servers`), drives it with closed-loop clients on 127.0.0.1, and
samples it with py-spy (`pip install py-spy`) for the same window. Every sample of a thread
that was running is put in one stage by its innermost recognised frame:

- model: inside the backend's run (ONNX Runtime's session, torch's modules);
- tokenize: the tokenizer and the family's planning of a request into sequences;
- pad: collating sequences into padded arrays;
- scheduler: the batcher's own Python (queue, batch selection, futures);
- http: uvicorn, Starlette/FastAPI, pydantic validation, JSON;
- other: the rest (logging, metrics, the event loop's own work).

A native thread that Python does not know of (ONNX Runtime's or torch's second worker) is
not sampled, so the shares are of the Python threads' running time; the server's whole CPU
use over the window (from /proc) is printed beside them.

    python -m bench.stages [--system rerankd-onnx-fp32] [--model minilm-l6] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# (stage, path fragments of a frame's file); the innermost frame matching any rule decides.
RULES = (
    ("model", ("onnxruntime/", "torch/nn/", "transformers/models/", "rerankd/families/")),
    ("pad", ("rerankd/engine/backend.py",)),
    ("tokenize", ("tokenizers/", "rerankd/engine/tokenize.py", "rerankd/prep.py")),
    ("scheduler", ("rerankd/batching.py", "rerankd/admission.py")),
    ("http", ("uvicorn/", "starlette/", "fastapi/", "pydantic", "json/", "h11/", "httptools/")),
)


def stage_of(stack: list[str]) -> str:
    """The stage of one sampled stack (root first), by its innermost recognised frame.

    A family's `run` collates then calls the backend: the backend frames sit deeper, so a
    sample inside the session counts as model and one inside the collation as pad.
    """
    for frame in reversed(stack):
        for stage, fragments in RULES:
            if any(fragment in frame for fragment in fragments):
                return stage
    return "other"


def tally(raw: str) -> Counter[str]:
    """Samples per stage from py-spy's raw (folded) output: `frame;frame;... count`."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack.split(";"))] += int(count)
    return counts


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="rerankd-onnx-fp32")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=40)
    args = parser.parse_args()
    beside = Path(sys.executable).parent / "py-spy"  # a venv's, when it is not on the PATH
    spy = shutil.which("py-spy") or (str(beside) if beside.is_file() else None)
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")

    from bench import fixtures, loadgen, servers
    from bench.machine import describe
    from bench.workload import make_requests

    system = servers.SYSTEMS[args.system]
    requests = make_requests(64)
    with servers.serve(system, fixtures.model_dir(args.model)) as server:
        dialect = loadgen.DIALECTS[system.dialect]
        warm = loadgen.drive(
            server.url, dialect, requests[:2], concurrency=1, max_requests=2, max_seconds=0
        )
        asyncio.run(warm)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "stacks.txt"
            recorder = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--duration",
                    str(args.seconds),
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            cpu_before, wall_before = _cpu_seconds(server.process.pid), time.monotonic()
            load = loadgen.drive(
                server.url,
                dialect,
                requests,
                concurrency=args.clients,
                max_requests=10_000,
                max_seconds=args.seconds - 2,
                server_pid=server.process.pid,
            )
            result = asyncio.run(load)
            cores = (_cpu_seconds(server.process.pid) - cpu_before) / (
                time.monotonic() - wall_before
            )
            recorder.wait(timeout=args.seconds + 60)
            counts = tally(raw.read_text())
    total = sum(counts.values()) or 1
    shares = {stage: round(count / total, 4) for stage, count in counts.most_common()}
    report = {
        "machine": describe(),
        "system": args.system,
        "model": args.model,
        "clients": args.clients,
        "pairs_per_s": round(result.pairs_per_s, 2),
        "server_cores_busy": round(cores, 2),
        "samples": total,
        "shares": shares,
    }
    print(json.dumps(report, indent=2))
    out = RESULTS / f"stages-{args.system}-{args.model}.json"
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
