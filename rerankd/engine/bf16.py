"""bf16 on CPUs with bf16 units (AVX512_BF16, AMX), checked against fp32 as int8 is.

Where the CPU's flags show a bf16 unit, `--dtype bfloat16` runs the torch weights in bf16
(oneDNN's AMX/AVX512_BF16 kernels); elsewhere the options refuse it, since emulated bf16 is
slower than fp32. Before bf16 serves, the probe set (`quantize_probe.probe_set()`) is scored
in fp32 and in bf16: below `quantize.MIN_SPEARMAN` or above `quantize.MAX_DEVIATION` bf16 is
refused loudly and fp32 is served. The verdict is cached per weights, settings files
(config.json, tokenizer: `ResolvedModel.settings_hash`), family, max_length and CPU bf16
flags, so only the first start pays for the check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rerankd.engine.backend import Batch
from rerankd.engine.cpu import BF16_FLAGS, cpu_flags
from rerankd.engine.options import EngineOptions
from rerankd.engine.quantize import MAX_DEVIATION, MIN_SPEARMAN, score_groups, spearman
from rerankd.engine.quantize_probe import probe_set
from rerankd.families import ModelFamily

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CHECK_FORMAT = 1  # bump when the probe or the check changes, so old verdicts are not reused


@dataclass
class Bf16Record:
    accepted: bool
    spearman: float
    max_deviation: float
    probe_pairs: int
    cpu_flags: list[str]
    torch: str
    seconds: float

    def summary(self) -> str:
        verdict = "bf16 accepted" if self.accepted else "bf16 REFUSED, fp32 kept"
        return (
            f"{verdict}: probe Spearman {self.spearman:.4f} (min {MIN_SPEARMAN}), max deviation "
            f"{self.max_deviation:.4f} (max {MAX_DEVIATION}) over {self.probe_pairs} pairs"
        )


def record_path(family: ModelFamily, options: EngineOptions) -> Path:
    model = family.model
    key = json.dumps(
        {
            "revision": model.revision,
            "settings": model.settings_hash,
            "family": family.name,
            "max_length": family.limits.max_length,
            "flags": sorted(cpu_flags() & BF16_FLAGS),
            "format": CHECK_FORMAT,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", model.name).strip("-") or "model"
    return options.cache_dir / "bf16" / f"{label}-{digest}.json"


def checked(
    family: ModelFamily,
    options: EngineOptions,
    *,
    min_spearman: float | None = None,
    max_deviation: float | None = None,
) -> Bf16Record:
    """The cached verdict for this model on this CPU, or a fresh one from the probe
    (thresholds: `MIN_SPEARMAN` and `MAX_DEVIATION` unless given)."""
    path = record_path(family, options)
    try:
        return Bf16Record(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    record = compare(
        family,
        min_spearman=MIN_SPEARMAN if min_spearman is None else min_spearman,
        max_deviation=MAX_DEVIATION if max_deviation is None else max_deviation,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    if record.accepted:
        logger.info("%s for %s", record.summary(), family.model.name)
    else:
        logger.warning(
            "%s. bf16 ranks %s differently from fp32 on the probe set; serving float32",
            record.summary(),
            family.model.name,
        )
    return record


def compare(
    family: ModelFamily, *, min_spearman: float = MIN_SPEARMAN, max_deviation: float = MAX_DEVIATION
) -> Bf16Record:
    """Score the probe set with the fp32 and the bf16 weights; accept bf16 if they agree."""
    import torch

    started = time.perf_counter()
    groups = probe_set()
    scores = {}
    for dtype in (torch.float32, torch.bfloat16):
        head = family.torch_head(dtype, "sdpa").eval()
        scores[dtype] = score_groups(family, _runner(head, family.input_names), groups)
        del head
    reference, mine = scores[torch.float32], scores[torch.bfloat16]
    rho = spearman(mine, reference)
    deviation = float(np.max(np.abs(mine - reference)))
    return Bf16Record(
        accepted=rho >= min_spearman and deviation <= max_deviation,
        spearman=round(rho, 5),
        max_deviation=round(deviation, 5),
        probe_pairs=len(reference),
        cpu_flags=sorted(cpu_flags() & BF16_FLAGS),
        torch=str(torch.__version__),
        seconds=round(time.perf_counter() - started, 1),
    )


def _runner(head: torch.nn.Module, names: list[str]) -> Callable[[Batch], np.ndarray]:
    import torch

    def run(batch: Batch) -> np.ndarray:
        inputs = {name: torch.from_numpy(array) for name, array in batch.inputs(names).items()}
        with torch.inference_mode():
            return np.asarray(head(**inputs).float().numpy())

    return run
