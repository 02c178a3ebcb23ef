"""ONNX Runtime backend: the CPU fast path (fp32, or int8 with dynamic quantization).

The model is exported once from the Hugging Face weights, graph-optimized with ONNX Runtime's
transformer fusions, optionally quantized, and cached on disk under a key made from the
weights' revision, the other files the graph reads (config.json, module configs, tokenizer:
`ResolvedModel.settings_hash`) and the export settings, so every later start only opens the
file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rerankd.engine.backend import Batch
from rerankd.engine.options import EngineOptions
from rerankd.errors import UnsupportedModel
from rerankd.models import ResolvedModel

if TYPE_CHECKING:
    from rerankd.families import ModelFamily

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 4  # bump when the exported graph changes, so old cache entries are not reused
# Past this many bytes of weights, the graph keeps them in a side file (protobuf's 2 GiB cap).
EXTERNAL_DATA_BYTES = 1 << 30
OPSET = 17
Progress = Callable[[str], None]


def cache_entry(model: ResolvedModel, options: EngineOptions) -> Path:
    """The cache folder of one model's export: named for humans, keyed by content."""
    key = json.dumps(
        {
            "revision": model.revision,
            "settings": model.settings_hash,
            "family": model.family,
            "format": EXPORT_FORMAT,
            "opset": OPSET,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", model.name).strip("-") or "model"
    return options.cache_dir / "onnx" / f"{label}-{digest}"


def ensure_exported(
    model: ResolvedModel, options: EngineOptions, progress: Progress | None = None
) -> Path:
    """The path of the ONNX file for `options.dtype`, exporting and quantizing if not cached."""
    from rerankd.families import bind_family

    step = progress or (lambda message: None)
    family = bind_family(model, options)
    check_exportable(family, options)
    entry = cache_entry(model, options)
    fp32 = entry / "model.onnx"
    if not fp32.is_file():
        step("exporting to ONNX")
        _export(family, entry)
    int8 = _cached_path(model, options)
    if int8 == fp32:
        return fp32
    if not int8.is_file():
        from rerankd.engine.quantize import quantize_checked

        return quantize_checked(model, options, fp32, int8, step)
    return int8


def check_exportable(family: ModelFamily, options: EngineOptions) -> None:
    """Refuse at once a family that has no ONNX export, or int8 where it is refused."""
    if family.onnx_refusal:
        raise UnsupportedModel(
            f"{family.model.name} ({family.name}) runs with --backend torch only: "
            f"{family.onnx_refusal}"
        )
    if options.dtype == "int8" and family.int8_refusal:
        raise UnsupportedModel(
            f"int8 is refused for {family.model.name} ({family.name}): {family.int8_refusal}. "
            "Use --dtype float32."
        )


def ensure_exported_in_child(
    model: ResolvedModel, options: EngineOptions, progress: Progress | None = None
) -> Path:
    """`ensure_exported` in a short-lived child process when the cache misses.

    Exporting imports torch and loads the full weights; done in the server's own process,
    that memory (several hundred MB, more than the ONNX session itself) would stay resident
    for the server's life. A cache hit needs no child.
    """
    path = _cached_path(model, options)
    if path.is_file():
        return path
    if progress:
        progress("exporting to ONNX in a child process")
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=ensure_exported, args=(model, options), name="rerankd-onnx-export"
    )
    child.start()
    child.join()
    path = _cached_path(model, options)  # fp32, if the child's int8 probe refused int8
    if child.exitcode != 0 or not path.is_file():
        raise RuntimeError(
            f"ONNX export of {model.name} failed (exit code {child.exitcode}); see the log above"
        )
    return path


def _cached_path(model: ResolvedModel, options: EngineOptions) -> Path:
    if options.dtype == "int8":  # tuned per CPU class, and fp32 where the probe refused int8
        from rerankd.engine.quantize import cached_path

        return cached_path(cache_entry(model, options), options)
    return cache_entry(model, options) / "model.onnx"


class OnnxBackend:
    def __init__(
        self,
        model: ResolvedModel,
        options: EngineOptions,
        family: ModelFamily,
        progress: Progress | None = None,
    ) -> None:
        if options.dtype in ("float16", "bfloat16"):
            raise ValueError(
                "the ONNX backend runs float32 or int8; use torch for float16/bfloat16"
            )
        import onnxruntime as ort

        check_exportable(family, options)
        path = ensure_exported_in_child(model, options, progress)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.thread_count
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
        if options.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("device cuda needs onnxruntime-gpu; or use --backend torch")
            index = options.device.partition(":")[2] or "0"
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(index)}))
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            str(path), session_options, providers=providers
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.file = path  # the graph served: fp32, or the int8 file of one CPU class
        served: str = options.dtype
        if served == "int8" and not path.name.startswith("model.int8"):
            served = "float32 (int8 refused by its accuracy probe)"
        self.description = f"onnxruntime {served} on {options.device}"

    def run(self, batch: Batch) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("this backend was closed")
        return np.asarray(self._session.run(None, batch.inputs(self._inputs))[0])

    def close(self) -> None:
        self._session = None


def _export(family: ModelFamily, entry: Path) -> None:
    import torch

    # Eager attention exports the pattern ONNX Runtime fuses into its Attention kernel (25%
    # faster on MiniLM-L6 than the SDPA export, which it cannot fuse); eval on the top
    # module, because export restores the top module's mode on every submodule.
    head = family.torch_head(torch.float32, "eager").eval()
    names = family.input_names
    # A padded example, so the traced graph keeps the attention-mask path.
    example_ids = torch.full((2, 8), 5, dtype=torch.long)
    example_mask = torch.ones((2, 8), dtype=torch.long)
    if family.padding_side == "left":
        example_mask[1, :3] = 0
    else:
        example_mask[1, 5:] = 0
    tensors = {
        "input_ids": example_ids,
        "attention_mask": example_mask,
        "token_type_ids": torch.zeros_like(example_ids),
    }
    example = tuple(tensors[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["output"] = {0: "batch"}
    large = sum(p.numel() * p.element_size() for p in head.parameters()) > EXTERNAL_DATA_BYTES
    entry.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=entry) as tmp:
        raw = Path(tmp) / "raw" / "raw.onnx"
        raw.parent.mkdir()
        with torch.inference_mode():
            torch.onnx.export(
                head,
                example,
                str(raw),
                input_names=names,
                output_names=["output"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        del head
        final = Path(tmp) / "model.onnx"
        optimizer = family.onnx_optimizer()
        if optimizer is None or not _optimize(raw, final, family, optimizer, large):
            _save(raw, final, large)
        # The weights' side file first, then the graph: a reader never sees a graph without.
        if (Path(tmp) / DATA_FILE).is_file():
            os.replace(Path(tmp) / DATA_FILE, entry / DATA_FILE)
        os.replace(final, entry / "model.onnx")
    (entry / "meta.json").write_text(
        json.dumps(
            {
                "model": family.model.name,
                "source": family.model.source,
                "revision": family.model.revision,
                "family": family.name,
            }
        ),
        encoding="utf-8",
    )


DATA_FILE = "model.onnx.data"


def _save(source: Path, out: Path, large: bool) -> None:
    """Re-save a graph, its weights in one side file next to it when they are large."""
    import onnx

    graph = onnx.load(str(source), load_external_data=True)
    onnx.save_model(
        graph,
        str(out),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )


def _optimize(raw: Path, out: Path, family: ModelFamily, model_type: str, large: bool) -> bool:
    """Fuse attention, layer norm and GELU with ONNX Runtime's transformer optimizer."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        config = family.model.config
        optimized = optimize_model(
            str(raw),
            model_type=model_type,
            num_heads=int(config.get("num_attention_heads", 0)),
            hidden_size=int(config.get("hidden_size", 0)),
            opt_level=1,
        )
        optimized.save_model_to_file(str(out), use_external_data_format=large)
        return True
    except Exception:  # noqa: BLE001 - an unfused graph is still correct, only slower
        logger.warning(
            "ONNX transformer optimization failed; using the plain export", exc_info=True
        )
        return False
