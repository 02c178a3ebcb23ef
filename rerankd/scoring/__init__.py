"""Scoring paths: how a family's outputs become one score per document, and their caches.

One module per way of scoring — pairwise (pair-score cache), embedding (embedding cache),
listwise (the whole list is one unit), late interaction (token-vector cache, MaxSim) — each
behind `ScoringPath.score(target, job)`. A family names its path (`ModelFamily.scoring`);
`ScoringPaths` picks it. Nothing outside this package asks what shape a model is.
"""

from rerankd.scoring.base import Scored, ScoringJob, ScoringKind, ScoringPath, Target
from rerankd.scoring.paths import ScoringPaths

__all__ = ["Scored", "ScoringJob", "ScoringKind", "ScoringPath", "ScoringPaths", "Target"]
