"""Errors as JSON, in one place: the status and body for every exception and dialect.

The common body is `{"error": {"message", "type", "code"}}`; TEI clients get TEI's own
`{"error", "error_type"}`. A 500 never carries the exception's text.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, RootModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from rerankd.errors import BackendFailed, RerankError
from rerankd.validation import describe_validation_error

logger = logging.getLogger(__name__)

TEI_DIALECT = "tei"
_TEI_TYPES = {
    400: "Validation",
    408: "Validation",
    413: "Validation",
    422: "Validation",
    429: "Overloaded",
    503: "Unhealthy",
    504: "Backend",
    404: "Validation",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorBody(BaseModel):
    error: ErrorDetail
    detail: str  # the message again, where Xinference's client looks for it


class TeiErrorBody(BaseModel):
    error: str
    error_type: str


def error_response(
    request: Request, status: int, message: str, kind: str, retry_after: float | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
    body = error_body(getattr(request.state, "dialect", None), status, message, kind)
    return JSONResponse(body, status_code=status, headers=headers)


def error_body(dialect: str | None, status: int, message: str, kind: str) -> dict[str, object]:
    """The error body of a dialect (TEI's own shape, or the common one)."""
    if dialect == TEI_DIALECT:
        return {"error": message, "error_type": _TEI_TYPES.get(status, "Backend")}
    return {"error": {"message": message, "type": kind, "code": status}, "detail": message}


async def rerank_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RerankError)
    if isinstance(exc, BackendFailed):  # the batcher logged it once, with its traceback
        return error_response(
            request, 500, "the model backend failed; the request was not scored", exc.type
        )
    return error_response(request, exc.status, exc.message, exc.type, exc.retry_after)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, (RequestValidationError, ValidationError)) else []
    return error_response(
        request, 422, describe_validation_error(list(errors)), "invalid_request_error"
    )


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = error_response(request, exc.status_code, str(exc.detail), "http_error")
    response.headers.update(exc.headers or {})  # e.g. Allow on a 405
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette's own `Allow` names only the
    first route that matched (so `GET` and `DELETE /v1/models/{uid}` would say just one)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s", request.url.path)
    return error_response(request, 500, "internal server error", "internal_error")


class AnyErrorBody(RootModel[ErrorBody | TeiErrorBody]):
    """Errors on `/rerank`, where a TEI-dialect request gets TEI's error shape."""


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Invalid input (empty query or documents, bad JSON)",
        401: "Missing or wrong credentials",
        404: "Unknown model",
        413: "Body, document count or text over the limit",
        422: "Wrong types or missing fields",
        429: "Rate limited or overloaded (see Retry-After)",
        503: "Not ready, or draining after SIGTERM (the response closes the connection)",
        504: "The request took longer than --request-timeout",
    }.items()
}

RERANK_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**spec, "model": AnyErrorBody} for status, spec in ERROR_RESPONSES.items()
}
