"""Naming models and finding their files (which family serves them: rerankd.families)."""

from rerankd.models.locate import locate, settings_hash, weights_hash
from rerankd.models.spec import ModelSpec, ResolvedModel

__all__ = ["ModelSpec", "ResolvedModel", "locate", "settings_hash", "weights_hash"]
