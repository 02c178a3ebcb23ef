"""An `Engine` is one loaded model: its family (tokens in, scores out) and a backend.

It sits above `rerankd.families` (which binds a model to its family) and the backends; the
package's `__init__` does not import it, so families may import the engine's lower modules
(tokenize, plan, backend, options) without a circle.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rerankd.documents import Loaded, Modalities, TextDocument, check_encodable
from rerankd.engine.backend import Backend
from rerankd.engine.choice import BackendChoice, choose_backend
from rerankd.engine.onnx_backend import Progress
from rerankd.engine.options import DType, EngineOptions, default_batch_tokens
from rerankd.engine.plan import Direction, LongDocPolicy, ScoringPlan
from rerankd.engine.tokenize import TextTokenizer, cut_text
from rerankd.families import ModelFamily, bind_family, resolve
from rerankd.families.base import FamilyOptions
from rerankd.models import ModelSpec, ResolvedModel

logger = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        model: ResolvedModel,
        options: EngineOptions,
        family: ModelFamily,
        backend: Backend,
        choice: BackendChoice,
    ) -> None:
        self.model = model
        self.options = options  # with the backend chosen, never "auto"
        self.family = family
        self.backend = backend
        self.choice = choice

    @property
    def served_dtype(self) -> DType:
        """The precision actually served: int8 or bf16 that its accuracy probe refused is fp32."""
        if self.options.backend == "onnx":
            served = getattr(self.backend, "file", None)
            is_int8 = isinstance(served, Path) and served.name.startswith("model.int8")
            return "int8" if is_int8 else "float32"
        dtype: DType = getattr(self.backend, "served_dtype", self.options.dtype)
        return dtype

    @property
    def batch_tokens(self) -> int:
        """The default batch budget for what this engine serves (`--max-batch-tokens` wins)."""
        return default_batch_tokens(self.options.device, self.choice.backend, self.served_dtype)

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.family.tokenizer

    @property
    def max_length(self) -> int:
        return self.family.limits.max_length

    @property
    def takes_instruction(self) -> bool:
        return self.family.takes_instruction

    def instruction_for(self, requested: str | None) -> str | None:
        """The instruction a request runs with; `InvalidInput` if the model takes none, or if
        it is not well-formed Unicode (a lone surrogate reaches no tokenizer or cache key)."""
        if requested is not None:
            check_encodable(requested, "instruction")
        return self.family.instruction_for(requested)

    def plan(
        self,
        query: str | Loaded,
        documents: Iterable[str | Loaded],
        policy: LongDocPolicy,
        instruction: str | None = None,
        options: FamilyOptions | None = None,
    ) -> ScoringPlan:
        """Items to run for one request (plain strings are text documents; images must be
        decoded); `instruction` must come from `instruction_for`, `options` from the family's
        `options_for`."""
        family = self.family if options is None else self.family.with_options(options)
        tokens = self.max_length * (policy.max_chunks_per_doc if policy.strategy == "chunk" else 1)
        cut = policy.allow_truncation  # else the whole text is needed to say it is too long
        return family.plan_documents(
            _document(query),
            [
                _cut(_document(d), tokens, policy.direction) if cut else _document(d)
                for d in documents
            ],
            policy,
            instruction,
        )

    @property
    def modalities(self) -> Modalities:
        return self.family.modalities

    def run(self, items: list[Any]) -> np.ndarray:
        """Run one batch of plan items (the family collates them) through the backend."""
        return self.family.run(self.backend.run, items)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores -> relevance in [0, 1], the family's way."""
        return self.family.normalize(raw)

    def warmup(self) -> None:
        instruction = self.instruction_for(None)
        plan = self.plan(
            "warm up", ["the engine before the first request"], LongDocPolicy(), instruction
        )
        self.run(plan.sequences)

    def close(self) -> None:
        self.backend.close()

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {
            "name": self.model.name,
            "source": self.model.source,
            "revision": self.model.revision,
            "kind": self.family.name,
            **self.family.describe(),
            "backend": self.backend.description,
            "backend_choice": dataclasses.asdict(self.choice),
            "max_length": self.max_length,
            "threads": self.options.thread_count,
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
    family = bind_family(resolved, options)
    choice, measured = choose_backend(resolved, options, family, progress)
    if choice.by != "asked":
        options = dataclasses.replace(options, backend=choice.backend)
        logger.info("backend for %s: %s", resolved.name, choice.summary())
    backend: Backend
    if measured is not None:  # the winner of the measurement, already loaded and warm
        family, backend = measured.family, measured.backend
    elif options.backend == "onnx":
        from rerankd.engine.onnx_backend import OnnxBackend

        backend = OnnxBackend(resolved, options, family, progress)
    else:
        from rerankd.engine.torch_backend import TorchBackend

        backend = TorchBackend(options, family)
        if options.share_prefix and backend.shares_prefix:
            family.share_prefix = True
    engine = Engine(resolved, options, family, backend, choice)
    engine.warmup()
    logger.info(
        "loaded %s (%s, %s) in %.1fs",
        resolved.name,
        family.name,
        backend.description,
        time.perf_counter() - started,
    )
    return engine


def _document(value: str | Loaded) -> Loaded:
    return TextDocument(value) if isinstance(value, str) else value


def _cut(document: Loaded, tokens: int, direction: Direction) -> Loaded:
    """A text document without what `tokens` tokens could never reach (see `cut_text`)."""
    if not isinstance(document, TextDocument):
        return document
    text = cut_text(document.text, tokens, direction)
    return document if text is document.text else TextDocument(text)
