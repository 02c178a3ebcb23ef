"""bf16 on a CPU with bf16 units: agreement with fp32 on unseen text, and speed (issue 24 item 4).

Scores the first 18 held-out groups (`quantize_probe.held_out_set()`, 216 pairs) with the torch
fp32 and bf16 weights, alternating fp32, bf16, fp32, bf16 so load from other work hits both;
prints Spearman of bf16 against fp32 and each round's fp32/bf16 time ratio.

    PYTHONPATH=. python -m bench.bf16_check [minilm-l6]
"""

from __future__ import annotations

import sys
import time


def main(name: str) -> None:
    import torch

    from bench import fixtures
    from rerankd.engine import EngineOptions
    from rerankd.engine.bf16 import _runner
    from rerankd.engine.engine import bind_family
    from rerankd.engine.quantize import score_groups, spearman
    from rerankd.engine.quantize_probe import held_out_set
    from rerankd.models import ModelSpec, resolve

    torch.set_num_threads(2)
    model = resolve(ModelSpec.parse(str(fixtures.model_dir(name))))
    family = bind_family(model, EngineOptions(threads=2))
    groups = held_out_set()[:18]
    runs: dict[torch.dtype, list[tuple[object, float]]] = {torch.float32: [], torch.bfloat16: []}
    for dtype in (torch.float32, torch.bfloat16) * 2:
        head = family.torch_head(dtype, "sdpa").eval()
        started = time.perf_counter()
        scores = score_groups(family, _runner(head, family.input_names), groups)
        runs[dtype].append((scores, time.perf_counter() - started))
    fp32, bf16 = runs[torch.float32], runs[torch.bfloat16]
    rho = spearman(bf16[0][0], fp32[0][0])  # type: ignore[arg-type]
    ratios = [round(fp32[i][1] / bf16[i][1], 2) for i in range(2)]
    print(f"{name}: {len(fp32[0][0])} held-out pairs, bf16 Spearman {rho:.4f}, speedup {ratios}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minilm-l6")
