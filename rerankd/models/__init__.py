"""Naming models and finding their files."""

from rerankd.models.resolve import resolve, weights_hash
from rerankd.models.spec import ModelSpec, ResolvedModel

__all__ = ["ModelSpec", "ResolvedModel", "resolve", "weights_hash"]
