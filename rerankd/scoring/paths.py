"""The scoring paths of one process, sharing its caches: the family names which one it takes."""

from __future__ import annotations

from rerankd.cache import EmbeddingCache, ScoreCache
from rerankd.families.base import ModelFamily, ScoringKind
from rerankd.images import ImageLoader
from rerankd.metrics import Metrics
from rerankd.scoring.base import Scored, ScoringJob, ScoringPath, Target
from rerankd.scoring.embedding import EmbeddingPath
from rerankd.scoring.late_interaction import LateInteractionPath, VectorCache
from rerankd.scoring.listwise import ListwisePath
from rerankd.scoring.pairwise import PairwisePath


class ScoringPaths:
    """One object per path; `score` hands a job to the path the target's family names."""

    def __init__(
        self,
        images: ImageLoader,
        metrics: Metrics | None = None,
        *,
        scores: ScoreCache | None = None,
        embeddings: EmbeddingCache | None = None,
        vectors: VectorCache | None = None,
    ) -> None:
        self.scores, self.embeddings, self.vectors = scores, embeddings, vectors
        self.paths: dict[ScoringKind, ScoringPath] = {
            "pairwise": PairwisePath(scores, images, metrics),
            "embedding": EmbeddingPath(embeddings, images, metrics),
            "listwise": ListwisePath(scores),
            "late_interaction": LateInteractionPath(vectors, metrics),
        }

    def path(self, family: ModelFamily) -> ScoringPath:
        return self.paths[family.scoring]

    async def score(self, target: Target, job: ScoringJob) -> Scored:
        return await self.path(target.family).score(target, job)

    async def close(self) -> None:
        caches: list[ScoreCache | EmbeddingCache | VectorCache | None] = [
            self.scores,
            self.embeddings,
            self.vectors,
        ]
        for cache in caches:
            if cache is not None:
                await cache.close()
