"""PyTorch backend: fp32 on CPU or CUDA, fp16/bf16 on CUDA."""

from __future__ import annotations

import gc

import numpy as np
import torch

from rerankd.engine.backend import Batch
from rerankd.engine.options import EngineOptions
from rerankd.families import ModelFamily

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchBackend:
    def __init__(self, options: EngineOptions, family: ModelFamily) -> None:
        if options.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {options.device} was asked for but torch sees no CUDA device")
        if options.device == "cpu":
            torch.set_num_threads(options.thread_count)
        self.device = torch.device(options.device)
        self._input_names = family.input_names
        head = family.torch_head(TORCH_DTYPES[options.dtype], "sdpa")
        self._head: torch.nn.Module | None = head.to(self.device)
        # The head runs a shared prefix once (rerankd/families/prefix.py) when it can.
        self.shares_prefix = bool(getattr(head, "shares_prefix", False))
        self.description = f"torch {options.dtype} on {options.device}"

    def run(self, batch: Batch) -> np.ndarray:
        if self._head is None:
            raise RuntimeError("this backend was closed")
        inputs = {
            name: torch.from_numpy(array).to(self.device, non_blocking=True)
            for name, array in batch.inputs(self._input_names).items()
        }
        with torch.inference_mode():
            return np.asarray(self._head(**inputs).float().cpu().numpy())

    def close(self) -> None:
        self._head = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
