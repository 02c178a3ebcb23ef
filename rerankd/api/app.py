"""`create_app(settings)`: the FastAPI application, its middleware and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

import rerankd
from rerankd.api import cohere, docs, errors, mixedbread, models, native, ops, playground, vllm
from rerankd.api.body import BODY_MODELS
from rerankd.api.lifecycle import Lifecycle
from rerankd.api.middleware import RequestGuard
from rerankd.api.security import Authenticator, RateLimiter
from rerankd.config import Settings
from rerankd.errors import RerankError
from rerankd.prep import own_the_tokenizer_threads
from rerankd.service import RerankService

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    service: RerankService | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    load_before_serving: bool = False,
) -> FastAPI:
    """Build the app. Models load in the background: /health says 503 until they are ready.

    With `load_before_serving` (gunicorn/uvicorn workers), the lifespan's start-up waits for
    the models, so a new or reloaded worker does not accept connections before it can serve
    them: the workers already running (or the listen backlog) take the traffic meanwhile.
    """
    own_the_tokenizer_threads()  # planning parallelism is the scheduler's pool, not rayon's
    service = service or RerankService(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = asyncio.Event()
        loading = asyncio.create_task(_load(app, service, on_fatal, loaded))
        if load_before_serving:
            await loaded.wait()
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await service.close()

    app = FastAPI(
        title="rerankd",
        version=rerankd.__version__,
        summary="Reranking server: native, TEI, Cohere, Jina, Xinference, Voyage, Mixedbread and vLLM APIs.",
        lifespan=lifespan,
        docs_url=None,  # served from packaged files by rerankd.api.docs, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.lifecycle = Lifecycle()
    service.metrics.track_state(lambda: service.ready, lambda: app.state.lifecycle.draining)

    app.include_router(native.router)
    app.include_router(cohere.router)
    app.include_router(vllm.router)
    app.include_router(mixedbread.router)
    app.include_router(ops.router)
    app.include_router(models.router)
    app.include_router(playground.router)
    app.include_router(docs.router)

    app.add_exception_handler(RerankError, errors.rerank_error_handler)
    app.add_exception_handler(RequestValidationError, errors.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_exception_handler(Exception, errors.unexpected_error_handler)

    app.add_middleware(
        RequestGuard,
        settings=settings,
        metrics=service.metrics,
        lifecycle=app.state.lifecycle,
        authenticator=Authenticator(settings)
        if settings.auth_enabled or settings.admin_keys
        else None,
        rate_limiter=RateLimiter(
            settings.rate_limit,
            settings.redis_url,
            on_failure=settings.rate_limit_on_failure,
            metrics=service.metrics,
        )
        if settings.rate_limit
        else None,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["Warning", "X-Request-ID", "Retry-After"],
        )
    _document_bodies(app)
    return app


async def _load(
    app: FastAPI,
    service: RerankService,
    on_fatal: Callable[[BaseException], None] | None,
    loaded: asyncio.Event,
) -> None:
    """Load the start-up models, then follow the shared desired state until shutdown."""
    try:
        try:
            await asyncio.to_thread(service.load)
        finally:
            loaded.set()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported, then the server stops
        app.state.lifecycle.load_error = exc
        logger.error("could not load models: %s", exc)
        if on_fatal is not None:
            on_fatal(exc)
        return
    # From now on, follow the shared desired state (launches made through other processes).
    await service.registry.follow()


def _document_bodies(app: FastAPI) -> None:
    """Add the hand-parsed request bodies' schemas to the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        _, definitions = models_json_schema(
            [(model, "validation") for model in BODY_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            definitions.get("$defs", {})
        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
