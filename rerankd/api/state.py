"""Typed access to the objects an app shares with its routes."""

from __future__ import annotations

from fastapi import Request

from rerankd.api.lifecycle import Lifecycle
from rerankd.config import Settings
from rerankd.metrics import Metrics
from rerankd.service import RerankService


def service(request: Request) -> RerankService:
    return request.app.state.service


def settings(request: Request) -> Settings:
    return request.app.state.settings


def lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


def metrics(request: Request) -> Metrics:
    return request.app.state.service.metrics
