"""Operations routes: health, info and Prometheus metrics (the model routes are in models.py)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, RootModel

import rerankd
from rerankd.api import state
from rerankd.api.access import is_admin
from rerankd.api.errors import ErrorBody
from rerankd.errors import NotReady
from rerankd.registry.handle import ModelState

router = APIRouter(tags=["operations"])

# What /info says of each model to a caller who is not an admin: no paths, no launcher.
PUBLIC_MODEL_FIELDS = ("name", "state", "family", "max_length", "revision", "backend", "dtype")


class Health(BaseModel):
    status: str
    model_loaded: bool


class HealthOrError(RootModel[Health | ErrorBody]):
    """503: the process's state, or (with ?model=) the error saying the model is loading."""


@router.get(
    "/health",
    response_model=Health,
    responses={
        404: {"model": ErrorBody, "description": "?model= names a model nobody launched"},
        503: {"model": HealthOrError, "description": "Loading or draining"},
    },
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
    if not any(h.state is ModelState.READY for h in service.registry.handles()):
        # Every model was terminated: nothing can be reranked, so a balancer must look away.
        return JSONResponse({"status": "no model served", "model_loaded": False}, status_code=503)
    return JSONResponse({"status": "ok", "model_loaded": True})


@router.get("/info", summary="Server and model information (TEI-like)")
async def info(request: Request) -> dict[str, Any]:
    """What any client may know; model paths, the pid, cores and who launched what only for
    an admin (see `rerankd.api.access`)."""
    service = state.service(request)
    settings = state.settings(request)
    models = service.describe()
    first = models[0] if models else {}
    public = {
        "version": rerankd.__version__,
        "model_id": first.get("name"),
        "model_sha": first.get("revision"),
        "model_type": "reranker",
        "max_input_length": first.get("max_length"),
        "max_client_batch_size": settings.max_documents,
        # Per model (each backend batches at its own size); TEI has one model: the first's.
        "max_batch_tokens": first.get("max_batch_tokens", settings.max_batch_tokens),
        "max_concurrent_requests": None,
        "ready": service.ready,
        "models": [{key: m.get(key) for key in PUBLIC_MODEL_FIELDS} for m in models],
    }
    if not is_admin(request):
        return public
    return {
        **public,
        "model_id": first.get("source"),
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
