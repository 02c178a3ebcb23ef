"""An `Engine` is one loaded model: tokenizer, planner and backend together."""

from __future__ import annotations

import logging
import time

import numpy as np

from rerankd.engine.backend import Backend, PaddedBatch
from rerankd.engine.onnx_backend import Progress
from rerankd.engine.options import EngineOptions
from rerankd.engine.plan import LongDocPolicy, Planner, ScoringPlan
from rerankd.engine.tokenize import Sequence, TextTokenizer
from rerankd.models import ModelKind, ModelSpec, ResolvedModel, resolve

logger = logging.getLogger(__name__)


class Engine:
    def __init__(self, model: ResolvedModel, options: EngineOptions, backend: Backend) -> None:
        self.model = model
        self.options = options
        self.backend = backend
        self.tokenizer = TextTokenizer.from_dir(model.path)
        self.planner = Planner(self.tokenizer, model.kind, self.max_length, options.query_cap)

    @property
    def max_length(self) -> int:
        return min(self.options.max_length, self.model.max_positions)

    def plan(self, query: str, documents: list[str], policy: LongDocPolicy) -> ScoringPlan:
        return self.planner.plan(query, documents, policy)

    def run(self, sequences: list[Sequence]) -> np.ndarray:
        """Run one batch: pad to its longest sequence and call the backend."""
        return self.backend.run(PaddedBatch.pad(sequences, self.tokenizer.pad_id))

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw score -> relevance in [0, 1]: sigmoid of the logit, or (cosine + 1) / 2."""
        if self.model.kind is ModelKind.CROSS_ENCODER:
            return 1.0 / (1.0 + np.exp(-raw))
        return np.clip((raw + 1.0) / 2.0, 0.0, 1.0)

    def warmup(self) -> None:
        plan = self.plan("warm up", ["the engine before the first request"], LongDocPolicy())
        self.run(plan.sequences)

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {
            "name": self.model.name,
            "source": self.model.source,
            "revision": self.model.revision,
            "kind": self.model.kind.value,
            "backend": self.backend.description,
            "max_length": self.max_length,
        }
        if self.options.backend == "onnx" and self.options.dtype == "int8":
            from rerankd.engine.onnx_backend import cache_entry
            from rerankd.engine.quantize import describe

            info["int8"] = describe(cache_entry(self.model, self.options))  # the export's probe
        return info


def load_engine(
    model: ModelSpec | ResolvedModel | str,
    options: EngineOptions | None = None,
    progress: Progress | None = None,
) -> Engine:
    """Resolve, load and warm up a model (the one slow call at start-up)."""
    options = options or EngineOptions()
    if isinstance(model, str):
        model = ModelSpec.parse(model)
    resolved = resolve(model) if isinstance(model, ModelSpec) else model
    started = time.perf_counter()
    uses_type_ids = int(resolved.config.get("type_vocab_size", 1)) > 1
    backend: Backend
    if options.backend == "onnx":
        from rerankd.engine.onnx_backend import OnnxBackend

        backend = OnnxBackend(resolved, options, uses_type_ids, progress)
    else:
        from rerankd.engine.torch_backend import TorchBackend

        backend = TorchBackend(resolved, options, uses_type_ids)
    engine = Engine(resolved, options, backend)
    engine.warmup()
    logger.info(
        "loaded %s (%s) in %.1fs", resolved.name, backend.description, time.perf_counter() - started
    )
    return engine
