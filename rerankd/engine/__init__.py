"""Tokenization and model backends; nothing here knows about HTTP or queues.

`Engine` and `load_engine` live in rerankd.engine.engine, above the families (which import
this package's lower modules): importing them from here would close a circle.
"""

from rerankd.engine.backend import Backend, PaddedBatch
from rerankd.engine.options import EngineOptions
from rerankd.engine.plan import LongDocPolicy, ScoringPlan
from rerankd.engine.tokenize import Sequence, TextTokenizer

__all__ = [
    "Backend",
    "EngineOptions",
    "LongDocPolicy",
    "PaddedBatch",
    "ScoringPlan",
    "Sequence",
    "TextTokenizer",
]
