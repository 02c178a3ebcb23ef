"""PyTorch backend: fp32 on CPU or CUDA, fp16/bf16 on CUDA, bf16 on CPUs with bf16 units."""

from __future__ import annotations

import gc
import threading

import numpy as np
import torch

from rerankd.engine.backend import Batch
from rerankd.engine.options import DType, EngineOptions
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
        self.served_dtype: DType = options.dtype
        refusal = ""
        if options.device == "cpu" and options.dtype == "bfloat16":
            from rerankd.engine.bf16 import checked

            record = checked(family, options)  # the probe against fp32, cached per model
            if not record.accepted:
                self.served_dtype = "float32"
                refusal = f" (bfloat16 refused by its accuracy probe: {record.summary()})"
        head = family.torch_head(TORCH_DTYPES[self.served_dtype], "sdpa")
        self._head: torch.nn.Module | None = head.to(self.device)
        self._streams: dict[int, torch.cuda.Stream] = {}  # CUDA: one per worker thread
        # The head runs a shared prefix once (rerankd/families/prefix.py) when it can.
        self.shares_prefix = bool(getattr(head, "shares_prefix", False))
        self.description = f"torch {self.served_dtype} on {options.device}{refusal}"

    def run(self, batch: Batch) -> np.ndarray:
        if self._head is None:
            raise RuntimeError("this backend was closed")
        if self.device.type == "cuda":
            return self._run_cuda(batch)
        inputs = {
            name: torch.from_numpy(array) for name, array in batch.inputs(self._input_names).items()
        }
        with torch.inference_mode():
            return np.asarray(self._head(**inputs).float().numpy())

    def _run_cuda(self, batch: Batch) -> np.ndarray:
        """On this thread's own stream, from pinned memory: with two batches in flight (two
        workers per replica, `--batches-in-flight`), one batch's copy in and kernels overlap
        the other's, and the only synchronisation is this batch's result copy back."""
        assert self._head is not None
        stream = self._streams.get(threading.get_ident())
        if stream is None:
            stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
            self._streams[threading.get_ident()] = stream
        with torch.inference_mode(), torch.cuda.stream(stream):
            inputs = {
                name: torch.from_numpy(array).pin_memory().to(self.device, non_blocking=True)
                for name, array in batch.inputs(self._input_names).items()
            }
            return np.asarray(self._head(**inputs).float().cpu().numpy())

    def close(self) -> None:
        self._head = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
