"""Tokenization and model backends; nothing here knows about HTTP or queues."""

from rerankd.engine.backend import Backend, PaddedBatch
from rerankd.engine.engine import Engine, load_engine
from rerankd.engine.options import EngineOptions
from rerankd.engine.plan import LongDocPolicy, ScoringPlan
from rerankd.engine.tokenize import Sequence, TextTokenizer

__all__ = [
    "Backend",
    "Engine",
    "EngineOptions",
    "LongDocPolicy",
    "PaddedBatch",
    "ScoringPlan",
    "Sequence",
    "TextTokenizer",
    "load_engine",
]
