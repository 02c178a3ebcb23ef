"""Typed access to the objects an app shares with its routes.

`app.state` is an untyped bag; these accessors check what they hand out, so a route never
works with an `Any` and a wiring mistake fails loudly at the first request.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request

from rerankd.api.lifecycle import Lifecycle
from rerankd.config import Settings
from rerankd.metrics import Metrics
from rerankd.service import RerankService

_T = TypeVar("_T")


def _get(request: Request, name: str, kind: type[_T]) -> _T:
    value = getattr(request.app.state, name)
    if not isinstance(value, kind):
        raise TypeError(f"app.state.{name} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def service(request: Request) -> RerankService:
    return _get(request, "service", RerankService)


def settings(request: Request) -> Settings:
    return _get(request, "settings", Settings)


def lifecycle(request: Request) -> Lifecycle:
    return _get(request, "lifecycle", Lifecycle)


def metrics(request: Request) -> Metrics:
    return service(request).metrics
