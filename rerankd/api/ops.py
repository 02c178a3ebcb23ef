"""Operations routes: health, info and Prometheus metrics (the model routes are in models.py)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

import rerankd
from rerankd.api import state
from rerankd.errors import NotReady

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str
    model_loaded: bool


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Loading or draining"}},
)
async def health(
    request: Request,
    model: str | None = Query(
        None, description="A model's readiness on this process instead of the process's"
    ),
) -> JSONResponse:
    """200 when every model is loaded; 503 while loading and while draining after SIGTERM.

    With `?model=NAME`: 200 when that model is ready here, 503 + Retry-After while it loads
    here (it is launched), 404 when nobody launched it.
    """
    service = state.service(request)
    lifecycle = state.lifecycle(request)
    if model is not None:
        if not service.ready:
            raise NotReady("the server is still loading its models")
        handle = service.registry.readiness(model)
        return JSONResponse({"status": "ok", "model": handle.uid, "model_loaded": True})
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
        "cores": service.registry.cores.summary(),
        "registry_problems": service.registry.problems,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(state.metrics(request).render(), media_type=CONTENT_TYPE_LATEST)
