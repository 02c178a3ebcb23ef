"""Naming models and finding their files (which family serves them: rerankd.families)."""

from rerankd.models.locate import locate, weights_hash
from rerankd.models.spec import ModelSpec, ResolvedModel

__all__ = ["ModelSpec", "ResolvedModel", "locate", "weights_hash"]
