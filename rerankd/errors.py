"""The exceptions rerankd raises, one tree so that every layer maps them the same way.

    RerankError
    ├── InvalidInput      bad request content (HTTP 400)
    │   └── PayloadTooLarge   too many documents or too much text (HTTP 413)
    ├── ModelNotFound     unknown served model, or weights that cannot be resolved (HTTP 404)
    ├── UnsupportedModel  files found, but no model family can serve them (HTTP 400)
    ├── Unauthorized      missing or wrong credentials (HTTP 401)
    ├── Forbidden         valid credentials without the right (an admin change) (HTTP 403)
    ├── Conflict          a registry change that clashes with what exists (HTTP 409)
    ├── LoadFailed        a launched model could not be loaded; the reason is shown (HTTP 400)
    ├── BodyTimeout       the client sent its body too slowly (HTTP 408)
    ├── RateLimited       per-client rate limit hit (HTTP 429)
    ├── Overloaded        the queue is full (HTTP 429)
    ├── NotReady          models still loading, or the server is draining (HTTP 503)
    ├── RequestTimeout    the request took longer than its deadline (HTTP 504)
    ├── BackendFailed     the model backend failed; the text is never shown to clients (HTTP 500)
    └── InternalError     anything unexpected; its text is never shown to clients (HTTP 500)

`InvalidInput` is also a `ValueError`, so in-process callers can catch the usual type.
"""

from __future__ import annotations


class RerankError(Exception):
    """Base class; `status` and `type` tell the HTTP layer how to render it."""

    status: int = 500
    type: str = "internal_error"
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RerankError, ValueError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(InvalidInput):
    status = 413
    type = "payload_too_large"


class ModelNotFound(RerankError, LookupError):
    status = 404
    type = "model_not_found"


class UnsupportedModel(RerankError, ValueError):
    """The model's files are there, but rerankd cannot score with them as they are."""

    status = 400
    type = "unsupported_model"


class Unauthorized(RerankError):
    status = 401
    type = "authentication_error"


class Forbidden(RerankError):
    status = 403
    type = "permission_error"


class Conflict(RerankError):
    status = 409
    type = "conflict_error"


class LoadFailed(RerankError):
    """A launch whose load failed. Its text is the reason, written for the operator."""

    status = 400
    type = "model_load_failed"


class BodyTimeout(RerankError):
    status = 408
    type = "request_timeout"


class RateLimited(RerankError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(RateLimited):
    type = "overloaded_error"


class NotReady(RerankError):
    status = 503
    type = "not_ready"
    retry_after = 1.0


class RequestTimeout(RerankError):
    status = 504
    type = "timeout_error"
    retry_after = 1.0


class BackendFailed(RerankError):
    status = 500
    type = "backend_error"


class InternalError(RerankError):
    status = 500
    type = "internal_error"
