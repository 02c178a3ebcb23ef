"""The in-process API: load a model once, score pairs and rerank documents, no server.

Scores go through the same scoring paths as the server's (rerankd.scoring), with no cache and
the model run directly in length-sorted batches instead of through the scheduler.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rerankd.batching import run_sorted
from rerankd.calibration.attach import find as find_calibration
from rerankd.documents import Document, TextDocument, check_documents, check_modalities
from rerankd.engine import EngineOptions, LongDocPolicy
from rerankd.engine.engine import Engine, load_engine
from rerankd.engine.options import default_cache_dir
from rerankd.errors import InvalidInput
from rerankd.families import resolve
from rerankd.images import ImageLoader, ImagePolicy, load_inline
from rerankd.models import ModelSpec
from rerankd.ranking import RankedDocument, check_min_relevance, check_top_n, rank
from rerankd.scoring import ScoringJob, ScoringPaths, Target
from rerankd.spans import SpanOptions, best, pieces, windows

T = TypeVar("T")


class Reranker:
    """A loaded reranker.

    >>> reranker = Reranker("builtin")
    >>> reranker.rerank("capital of France", ["Paris is in France.", "Bananas are yellow."])[0].index
    0
    """

    def __init__(
        self,
        model: str | Path = "builtin",
        *,
        backend: str = "torch",
        dtype: str = "float32",
        device: str = "cpu",
        max_length: int | None = None,
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        cache_dir: Path | None = None,
        family: str | None = None,
        instruction: str | None = None,
        calibration: Path | str | None = None,
        share_prefix: bool = True,
        family_options: Mapping[str, object] | None = None,
    ) -> None:
        options = EngineOptions(
            backend=backend,  # type: ignore[arg-type]
            dtype=dtype,  # type: ignore[arg-type]
            device=device,
            max_length=max_length,
            threads=threads,
            cache_dir=cache_dir or default_cache_dir(),
            share_prefix=share_prefix,
        )
        spec = ModelSpec.parse(
            str(model),
            family=family,
            instruction=instruction,
            family_options=dict(family_options or {}),
        )
        resolved = resolve(spec)
        self.calibration = find_calibration(resolved, str(calibration) if calibration else None, ())
        self.engine: Engine = load_engine(resolved, options)
        self.max_batch_tokens = max_batch_tokens or self.engine.batch_tokens
        self._images = ImagePolicy()
        self._paths = ScoringPaths(ImageLoader(self._images))
        self._target = Target(
            name=self.engine.model.name,
            identity=(),  # no cache here: nothing is keyed by it
            engine=self.engine,
            submit=self._submit,
            admit=lambda tokens: None,  # no queue to protect in-process
            prepare=_prepare,
        )

    @property
    def model(self) -> str:
        return self.engine.model.name

    def score(
        self,
        pairs: Iterable[tuple[str | Document, str | Document]],
        *,
        raw: bool = False,
        policy: LongDocPolicy | None = None,
        instruction: str | None = None,
        options: Mapping[str, object] | None = None,
    ) -> np.ndarray:
        """One score per (query, document) pair, in the order given; `options`: the family's
        extension fields (e.g. a layerwise model's `cutoff_layers`)."""
        pairs = list(pairs)
        if not pairs:
            return np.empty((0,), dtype=np.float64)
        scores = np.empty(len(pairs), dtype=np.float64)
        by_query: dict[str | Document, list[int]] = {}
        for position, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidInput(f"pairs[{position}] must be a (query, document) pair")
            by_query.setdefault(pair[0], []).append(position)
        for query, positions in by_query.items():
            checked_query, documents = self._check(query, [pairs[p][1] for p in positions])
            scores[positions] = self._scores(
                checked_query, documents, raw, policy or LongDocPolicy(), instruction, options
            )
        return scores

    def rerank(
        self,
        query: str | Document,
        documents: Sequence[str | Document],
        top_n: int | None = None,
        *,
        raw: bool = False,
        policy: LongDocPolicy | None = None,
        instruction: str | None = None,
        min_relevance: float | None = None,
        spans: bool = False,
        span_options: SpanOptions | None = None,
        options: Mapping[str, object] | None = None,
    ) -> list[RankedDocument]:
        """The documents ordered by relevance to the query, best first; calibrated when a
        calibration is attached, below `min_relevance` dropped, with each text document's best
        spans when `spans` is set (as the server answers)."""
        checked_query, checked = self._check(query, documents)
        top = check_top_n(top_n, len(checked))
        threshold = check_min_relevance(min_relevance)
        policy = policy or LongDocPolicy()
        scores = self._scores(checked_query, checked, True, policy, instruction, options)
        relevance = self._relevance(raw)
        calibrated = self.calibration is not None and not raw
        ranked = rank(
            relevance(scores),
            checked,
            top,
            raw=scores if calibrated else None,
            min_relevance=threshold,
        )
        if not spans:
            return ranked
        cutting = span_options or SpanOptions(max_windows=policy.max_chunks_per_doc)
        out = []
        for result in ranked:
            document = checked[result.index]
            if not isinstance(document, TextDocument):
                out.append(dataclasses.replace(result, spans=[]))
                continue
            text = document.text
            units = pieces(text, self.engine.tokenizer.offsets, cutting.max_tokens)
            cuts = windows(units, cutting)
            window_policy = dataclasses.replace(policy, strategy="truncate", allow_truncation=True)
            found = self._scores(
                checked_query,
                [TextDocument(text[a:b]) for a, b in cuts],
                True,
                window_policy,
                instruction,
                options,
            )
            out.append(
                dataclasses.replace(result, spans=best(cuts, relevance(found), cutting.max_spans))
            )
        return out

    def _relevance(self, raw: bool) -> Callable[[np.ndarray], np.ndarray]:
        if raw:
            return lambda scores: scores
        if self.calibration is not None:
            return self.calibration.apply
        return self.engine.normalize

    def _check(self, query: object, documents: object) -> tuple[Document, list[Document]]:
        """Plain strings become text documents, once; then what the model cannot read is refused."""
        checked_query, checked = check_documents(query, documents)
        check_modalities(self.model, self.engine.family.modalities, checked_query, checked)
        return checked_query, checked

    def _scores(
        self,
        query: Document,
        documents: list[Document],
        raw: bool,
        policy: LongDocPolicy,
        instruction: str | None,
        options: Mapping[str, object] | None = None,
    ) -> np.ndarray:
        """Scores of inputs already checked by `_check`."""
        loaded = [
            load_inline(document, where, self._images.max_bytes)
            for where, document in [("query", query), *_numbered(documents)]
        ]
        job = ScoringJob(
            query=loaded[0],
            documents=list(enumerate(loaded[1:])),
            policy=policy,
            instruction=self.engine.instruction_for(instruction),
            options=self.engine.family.options_for(options or {}),
        )
        scores = _run(self._paths.score(self._target, job)).raw
        return scores if raw else self._relevance(False)(scores)

    async def _submit(self, items: list[Any]) -> np.ndarray:
        return run_sorted(self.engine.run, items, self.max_batch_tokens)


async def _prepare(work: Callable[[], T], tokens: int, chars: int) -> T:
    return work()  # in-process: plan in the caller's thread, as the model runs there


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a path's coroutine to its end; from inside a running event loop, in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def _numbered(documents: list[Document]) -> list[tuple[str, Document]]:
    return [(f"documents[{i}]", d) for i, d in enumerate(documents)]
