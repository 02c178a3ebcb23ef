"""What `--backend auto` measures and chooses on this CPU, for the bench fixtures (issue 24).

Runs the real path (`load_engine` with `backend="auto"`) in a fresh cache, so each model is
exported and both backends are timed on the workload `rerankd.engine.choice` uses; prints the
pairs/s of each and the choice, and writes them with the CPU to bench/results.

    python -m bench.backend_choice [--models minilm-l6 xlmr-base] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "xlmr-base"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from bench import fixtures
    from bench.machine import describe
    from rerankd.engine import EngineOptions
    from rerankd.engine.engine import load_engine

    rows = []
    with tempfile.TemporaryDirectory(prefix="rerankd-choice-") as cache:
        for name in args.models:
            options = EngineOptions(backend="auto", cache_dir=Path(cache), threads=args.threads)
            started = time.perf_counter()
            engine = load_engine(str(fixtures.model_dir(name)), options)
            seconds = time.perf_counter() - started
            choice = engine.choice
            engine.close()
            row = {
                "model": name,
                "threads": options.thread_count,
                "chosen": choice.backend,
                "pairs_per_s": choice.pairs_per_s,
                "why": choice.why,
                "first_start_s": round(seconds, 1),  # export + measuring + the chosen load
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = (
        Path(__file__).parent / "results" / f"backend_choice-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2), encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
