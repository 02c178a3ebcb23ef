"""The in-process API: load a model once, score pairs and rerank documents, no server."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rerankd.batching import run_sorted
from rerankd.documents import TEXT_ONLY, Document, TextDocument, check_documents, check_modalities
from rerankd.engine import Engine, EngineOptions, LongDocPolicy, load_engine
from rerankd.engine.options import default_batch_tokens
from rerankd.errors import InvalidInput
from rerankd.models import ModelSpec
from rerankd.ranking import RankedDocument, check_top_n, rank


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
        max_length: int = 512,
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        extra = {"cache_dir": cache_dir} if cache_dir is not None else {}
        options = EngineOptions(
            backend=backend,  # type: ignore[arg-type]
            dtype=dtype,  # type: ignore[arg-type]
            device=device,
            max_length=max_length,
            threads=threads,
            **extra,
        )
        self.engine: Engine = load_engine(ModelSpec.parse(str(model)), options)
        self.max_batch_tokens = max_batch_tokens or default_batch_tokens(device)

    @property
    def model(self) -> str:
        return self.engine.model.name

    def score(
        self,
        pairs: Iterable[tuple[str | Document, str | Document]],
        *,
        raw: bool = False,
        policy: LongDocPolicy | None = None,
    ) -> np.ndarray:
        """One score per (query, document) pair, in the order given."""
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
                checked_query, documents, raw, policy or LongDocPolicy()
            )
        return scores

    def rerank(
        self,
        query: str | Document,
        documents: list[str | Document],
        top_n: int | None = None,
        *,
        raw: bool = False,
        policy: LongDocPolicy | None = None,
    ) -> list[RankedDocument]:
        """The documents ordered by relevance to the query, best first."""
        checked_query, checked = self._check(query, documents)
        top = check_top_n(top_n, len(checked))
        scores = self._scores(checked_query, checked, raw, policy or LongDocPolicy())
        return rank(scores, checked, top)

    def _check(self, query: object, documents: object) -> tuple[Document, list[Document]]:
        """Plain strings become text documents, once; then what the model cannot read is refused."""
        checked_query, checked = check_documents(query, documents)
        check_modalities(self.model, TEXT_ONLY, checked_query, checked)
        return checked_query, checked

    def _scores(
        self, query: Document, documents: list[Document], raw: bool, policy: LongDocPolicy
    ) -> np.ndarray:
        """Scores of inputs already checked by `_check`."""
        texts = [d.text for d in (query, *documents) if isinstance(d, TextDocument)]
        plan = self.engine.plan(texts[0], texts[1:], policy)
        outputs = run_sorted(self.engine.run, plan.sequences, self.max_batch_tokens)
        scores = plan.combine(outputs)
        return scores if raw else self.engine.normalize(scores)
