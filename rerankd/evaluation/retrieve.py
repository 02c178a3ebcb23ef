"""First-stage candidates from a bi-encoder (the built-in model by default).

Used when a BEIR set comes without a run file, and by `rerankd finetune` to mine hard
negatives. Texts go through the same engine `rerankd serve` runs (mean pooling, unit length),
so a query's candidates are the corpus documents with the highest cosine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rerankd.batching import run_sorted
from rerankd.engine import EngineOptions
from rerankd.engine.engine import Engine, load_engine
from rerankd.engine.options import default_batch_tokens
from rerankd.scoring.embedding import embedding_family

Advance = Callable[[int], None]


class DenseRetriever:
    """Embeds a corpus once, then returns each query's top-k document ids."""

    def __init__(self, model: str = "builtin", backend: str = "torch", device: str = "cpu") -> None:
        self.engine: Engine = load_engine(
            model,
            EngineOptions(backend=backend, device=device),  # type: ignore[arg-type]
        )
        embedding_family(self.engine.family)  # candidates need an embedding model
        self._budget = default_batch_tokens(device)

    def embed(
        self, texts: Sequence[str], advance: Advance | None = None, chunk: int = 512
    ) -> np.ndarray:
        """Unit-length embeddings, one row per text (truncated to the model's length), built
        as the embedding family builds a query's sequence."""
        tokenizer = self.engine.tokenizer
        room = self.engine.max_length - tokenizer.single_specials
        rows = []
        for start in range(0, len(texts), chunk):
            part = list(texts[start : start + chunk])
            sequences = [tokenizer.single(ids[:room]) for ids in tokenizer.encode(part)]
            rows.append(run_sorted(self.engine.run, sequences, self._budget).astype(np.float32))
            if advance is not None:
                advance(len(part))
        return np.concatenate(rows) if rows else np.empty((0, 0), dtype=np.float32)

    def top_k(
        self,
        query_ids: list[str],
        queries: list[str],
        corpus: dict[str, str],
        k: int,
        advance: Advance | None = None,
    ) -> dict[str, list[str]]:
        doc_ids = list(corpus)
        documents = self.embed([corpus[d] for d in doc_ids], advance)
        embedded = self.embed(queries, advance)
        k = min(k, len(doc_ids))
        out: dict[str, list[str]] = {}
        for qid, similarities in zip(query_ids, embedded @ documents.T, strict=True):
            best = np.argpartition(-similarities, k - 1)[:k]
            best = best[np.argsort(-similarities[best], kind="stable")]
            out[qid] = [doc_ids[i] for i in best]
        return out
