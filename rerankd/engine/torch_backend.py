"""PyTorch backend: fp32 on CPU or CUDA, fp16/bf16 on CUDA."""

from __future__ import annotations

import numpy as np
import torch

from rerankd.engine.backend import PaddedBatch
from rerankd.engine.heads import CrossEncoderHead, MeanPoolHead
from rerankd.engine.options import EngineOptions
from rerankd.models import ModelKind, ResolvedModel

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_head(
    model: ResolvedModel, dtype: torch.dtype = torch.float32, attention: str = "sdpa"
) -> torch.nn.Module:
    """The Hugging Face model with its scoring head, in eval mode.

    `attention` is the transformers attention implementation: sdpa runs fastest in torch,
    eager exports to the graph ONNX Runtime's optimizer knows how to fuse.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification

    loader = (
        AutoModelForSequenceClassification if model.kind is ModelKind.CROSS_ENCODER else AutoModel
    )
    try:
        hf_model = loader.from_pretrained(
            str(model.path), dtype=dtype, attn_implementation=attention
        )
    except TypeError:  # transformers < 4.56 names it torch_dtype
        hf_model = loader.from_pretrained(
            str(model.path), torch_dtype=dtype, attn_implementation=attention
        )
    head = (
        CrossEncoderHead(hf_model)
        if model.kind is ModelKind.CROSS_ENCODER
        else MeanPoolHead(hf_model)
    )
    return head.eval()


class TorchBackend:
    def __init__(self, model: ResolvedModel, options: EngineOptions, uses_type_ids: bool) -> None:
        if options.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {options.device} was asked for but torch sees no CUDA device")
        if options.device == "cpu":
            torch.set_num_threads(options.thread_count)
        self.device = torch.device(options.device)
        self._uses_type_ids = uses_type_ids
        self._head = load_head(model, _TORCH_DTYPES[options.dtype]).to(self.device)
        self.description = f"torch {options.dtype} on {options.device}"

    def run(self, batch: PaddedBatch) -> np.ndarray:
        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
        }
        if self._uses_type_ids:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
        with torch.inference_mode():
            return self._head(**inputs).cpu().numpy()

    def close(self) -> None:
        """Drop the weights now (the registry calls this, then frees the allocator's pages)."""
        self._head = None  # type: ignore[assignment]
