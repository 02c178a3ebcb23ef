"""The model registry: registrations (persisted), launched models with states and leases."""

from rerankd.registry.handle import ModelHandle, ModelState, Placement
from rerankd.registry.registry import ModelRegistry
from rerankd.registry.spec import LaunchRequest, Registration

__all__ = [
    "LaunchRequest",
    "ModelHandle",
    "ModelRegistry",
    "ModelState",
    "Placement",
    "Registration",
]
