"""Operations routes: health, info, Prometheus metrics, and the OpenAI-style model list."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

import rerankd
from rerankd.api import state
from rerankd.api.errors import ERROR_RESPONSES
from rerankd.errors import ModelNotFound

router = APIRouter(tags=["operations"])
_STARTED = int(time.time())


class Health(BaseModel):
    status: str
    model_loaded: bool


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "rerankd"
    model_type: str = "rerank"
    revision: str | None = None
    max_length: int | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Loading or draining"}},
)
async def health(request: Request) -> JSONResponse:
    """200 when every model is loaded; 503 while loading and while draining after SIGTERM."""
    service = state.service(request)
    lifecycle = state.lifecycle(request)
    if lifecycle.draining:
        return JSONResponse({"status": "draining", "model_loaded": service.ready}, status_code=503)
    if lifecycle.load_error is not None:
        return JSONResponse({"status": "failed", "model_loaded": False}, status_code=503)
    if not service.ready:
        return JSONResponse({"status": "loading", "model_loaded": False}, status_code=503)
    return JSONResponse({"status": "ok", "model_loaded": True})


@router.get("/info", summary="Server and model information (TEI-like)")
async def info(request: Request) -> dict[str, Any]:
    service = state.service(request)
    settings = state.settings(request)
    models = service.describe()
    first = models[0] if models else {}
    return {
        "version": rerankd.__version__,
        "model_id": first.get("source"),
        "model_sha": first.get("revision"),
        "model_type": "reranker",
        "max_input_length": first.get("max_length"),
        "max_client_batch_size": settings.max_documents,
        "max_batch_tokens": settings.batch_tokens,
        "max_concurrent_requests": None,
        "ready": service.ready,
        "models": models,
        "pid": os.getpid(),
        # Set by rerankd.asgi under gunicorn/uvicorn: worker count, its source, threads each.
        "workers": getattr(request.app.state, "workers", None),
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(state.metrics(request).render(), media_type=CONTENT_TYPE_LATEST)


def _cards(request: Request) -> list[ModelCard]:
    service = state.service(request)
    return [
        ModelCard(
            id=name,
            created=_STARTED,
            revision=served.engine.model.revision,
            max_length=served.engine.max_length,
        )
        for name, served in service.models.items()
    ]


@router.get("/v1/cluster/auth", summary="Xinference: whether clients must send a key")
async def cluster_auth(request: Request) -> dict[str, bool]:
    return {"auth": state.settings(request).auth_enabled}


@router.get("/v1/models", response_model=ModelList, summary="Served models (OpenAI-style list)")
async def list_models(request: Request) -> ModelList:
    return ModelList(data=_cards(request))


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERROR_RESPONSES)
async def get_model(request: Request, model_id: str) -> ModelCard:
    for card in _cards(request):
        if card.id == model_id:
            return card
    names = ", ".join(repr(c.id) for c in _cards(request))
    raise ModelNotFound(f"model {model_id!r} is not served here; served models: {names}")
