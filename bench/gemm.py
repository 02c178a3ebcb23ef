"""The machine's compute ceiling: fp32 matrix-multiply GFLOP/s with torch on the cores used.

Encoders spend almost all their time in GEMMs, so the best dense fp32 GEMM rate on the same
threads is the honest "100%" to measure a reranker's useful FLOP/s against.
"""

from __future__ import annotations

import json
import time


def measure(threads: int = 2, trials: int = 5, seconds_per_trial: float = 0.4) -> dict[str, object]:
    """Best GFLOP/s over square and transformer-shaped GEMMs (tokens x h by h x 4h).

    Each shape gets several short trials and keeps its best: on a shared machine the best
    trial is the one least disturbed, and a ceiling should not be lowered by noise.
    """
    import torch

    torch.set_num_threads(threads)
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 768, 3072), (4096, 384, 1536)]
    rates = {}
    for m, k, n in shapes:
        a = torch.randn(m, k)
        b = torch.randn(k, n)
        torch.mm(a, b)  # warm up (allocations, kernel choice)
        best = 0.0
        for _ in range(trials):
            runs, started = 0, time.perf_counter()
            while True:
                torch.mm(a, b)
                runs += 1
                elapsed = time.perf_counter() - started
                if elapsed >= seconds_per_trial:
                    break
            best = max(best, 2.0 * m * k * n * runs / elapsed / 1e9)
        rates[f"{m}x{k}x{n}"] = round(best, 1)
    return {"threads": threads, "gflops": max(rates.values()), "by_shape": rates}


def main() -> None:
    print(json.dumps(measure(), indent=2))


if __name__ == "__main__":
    main()
