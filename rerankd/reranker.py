"""The in-process API: load a model once, score pairs and rerank documents, no server."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rerankd.batching import run_sorted
from rerankd.engine import Engine, EngineOptions, LongDocPolicy, load_engine
from rerankd.engine.options import default_batch_tokens, default_cache_dir
from rerankd.errors import InvalidInput
from rerankd.models import ModelSpec
from rerankd.ranking import RankedDocument, check_inputs, check_top_n, rank


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
    ) -> None:
        options = EngineOptions(
            backend=backend,  # type: ignore[arg-type]
            dtype=dtype,  # type: ignore[arg-type]
            device=device,
            max_length=max_length,
            threads=threads,
            cache_dir=cache_dir or default_cache_dir(),
        )
        spec = ModelSpec.parse(str(model), family=family, instruction=instruction)
        self.engine: Engine = load_engine(spec, options)
        self.max_batch_tokens = max_batch_tokens or default_batch_tokens(device)

    @property
    def model(self) -> str:
        return self.engine.model.name

    def score(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        raw: bool = False,
        policy: LongDocPolicy | None = None,
        instruction: str | None = None,
    ) -> np.ndarray:
        """One score per (query, document) pair, in the order given."""
        pairs = list(pairs)
        if not pairs:
            return np.empty((0,), dtype=np.float64)
        scores = np.empty(len(pairs), dtype=np.float64)
        by_query: dict[str, list[int]] = {}
        for position, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidInput(f"pairs[{position}] must be a (query, document) pair")
            by_query.setdefault(pair[0], []).append(position)
        for query, positions in by_query.items():
            checked_query, documents = check_inputs(query, [pairs[p][1] for p in positions])
            scores[positions] = self._scores(
                checked_query, documents, raw, policy or LongDocPolicy(), instruction
            )
        return scores

    def rerank(
        self,
        query: str,
        documents: list[str],
        top_n: int | None = None,
        *,
        raw: bool = False,
        policy: LongDocPolicy | None = None,
        instruction: str | None = None,
    ) -> list[RankedDocument]:
        """The documents ordered by relevance to the query, best first."""
        query, documents = check_inputs(query, documents)
        top = check_top_n(top_n, len(documents))
        scores = self._scores(query, documents, raw, policy or LongDocPolicy(), instruction)
        return rank(scores, documents, top)

    def _scores(
        self,
        query: str,
        documents: list[str],
        raw: bool,
        policy: LongDocPolicy,
        instruction: str | None,
    ) -> np.ndarray:
        """Scores of inputs already checked by `check_inputs`."""
        instruction = self.engine.instruction_for(instruction)
        plan = self.engine.plan(query, documents, policy, instruction)
        outputs = run_sorted(self.engine.run, plan.sequences, self.max_batch_tokens)
        scores = plan.combine(outputs)
        return scores if raw else self.engine.normalize(scores)
