"""The model routes, as Xinference's client calls them for rerank models.

- `GET /v1/cluster/auth`: whether clients must send a key (xinference-client asks first);
- `POST/GET /v1/model_registrations/rerank`, `GET/DELETE /v1/model_registrations/rerank/{name}`:
  registrations (the body of a POST is `{"model": "<the spec as a JSON string>", "persist"}`);
- `POST /v1/models` (launch; `?wait_ready=false` returns while it loads), `GET /v1/models`,
  `GET /v1/models/{uid}` (needs `model_type: rerank`), `DELETE /v1/models/{uid}` (terminate).

Reading needs ordinary access; changes need an admin credential (see `require_admin`).
Routes only parse, authorise and render: the registry does the work.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rerankd.api import state
from rerankd.api.errors import ERROR_RESPONSES, ErrorBody
from rerankd.api.security import Principal
from rerankd.errors import Forbidden, Unauthorized
from rerankd.registry import LaunchRequest, ModelHandle, Registration
from rerankd.registry.desired import StoredLaunch
from rerankd.registry.registry import Entry, ModelRegistry

logger = logging.getLogger(__name__)
router = APIRouter(tags=["models"])

MODEL_TYPE = "rerank"
_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: {"model": ErrorBody, "description": "The model failed to load (the reason is given)"},
    403: {"model": ErrorBody, "description": "The credential may not change the registry"},
    409: {"model": ErrorBody, "description": "The name or uid is taken, or the model runs"},
}


class ModelCard(BaseModel):
    """A launched model (OpenAI's list entry, with Xinference's description fields)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "model"
    created: int
    owned_by: str = "rerankd"
    model_type: str = MODEL_TYPE
    model_name: str
    model_uid: str
    state: str = Field(
        description="On this process: pending (launched elsewhere, not started here yet), "
        "loading, ready, draining or failed"
    )
    desired: str = Field(
        "local",
        description="launched: in the shared desired state, every process serves it; "
        "local: this process only (a start-up --model, or a persist: false registration)",
    )
    error: str | None = Field(None, description="Why the load failed")
    replica: int
    replicas: int
    devices: list[str]
    address: str
    revision: str | None = None
    max_length: int | None = None
    load_seconds: float | None = None
    in_flight: int = Field(0, description="Requests holding the model now")


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class LaunchResult(BaseModel):
    model_uid: str
    state: str
    error: str | None = None


class TerminateResult(BaseModel):
    model_uid: str
    drained_requests: int = Field(description="Requests in flight when terminate began")
    seconds: float


class RegisterBody(BaseModel):
    """Xinference's register body; `model` is the spec, as a JSON string or an object."""

    model: str | dict[str, Any]
    persist: bool = False
    worker_ip: str | None = None
    replace: bool = Field(False, description="rerankd: replace a registration of this name")


class RegistrationInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_name: str
    is_builtin: bool
    origin: str = Field(description="builtin, file, startup or api")
    persisted: bool = Field(
        description="In the shared store (every process knows it, it survives restarts); "
        "false: this process only"
    )
    scope: str = Field(description="shared, or process (persist: false)")


# Access ----------------------------------------------------------------------------------


def require_admin(request: Request) -> str:
    """Who may change the registry; returns their name for the change log.

    An open server (no credentials configured at all) lets anyone change it, as it lets anyone
    rerank; otherwise only admin keys, or JWTs with the admin scope, may.
    """
    settings = state.settings(request)
    principal: Principal | None = getattr(request.state, "principal", None)
    who = principal.name if principal else "unknown"
    if not settings.auth_enabled and not settings.admin_enabled:
        return who
    if principal is None or not principal.authenticated:
        raise Unauthorized("registry changes need an admin credential")
    if not principal.admin:
        raise Forbidden(
            "this credential may rerank but not change the model registry; use an admin key "
            f"(--admin-keys) or a JWT with scope {settings.jwt_admin_scope!r}"
        )
    return who


def _registry(request: Request) -> ModelRegistry:
    return state.service(request).registry


def _check_type(model_type: str) -> None:
    if model_type.lower() != MODEL_TYPE:
        raise _invalid(
            ("path", "model_type"), f"rerankd registers rerank models only, not {model_type!r}"
        )


def _invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": location, "msg": message, "type": "value_error"}])


# Registrations ---------------------------------------------------------------------------


@router.post(
    "/v1/model_registrations/{model_type}",
    response_model=RegistrationInfo,
    responses=_CHANGE_RESPONSES,
    summary="Register a model (Xinference custom rerank JSON)",
)
async def register_model(request: Request, model_type: str, body: RegisterBody) -> dict[str, Any]:
    who = require_admin(request)
    _check_type(model_type)
    spec: Any = body.model
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            raise _invalid(("body", "model"), "not valid JSON") from None
    try:
        registration = Registration.model_validate(spec)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", "model", *e["loc"])} for e in exc.errors()]
        ) from None
    entry = await _registry(request).register(
        registration, persist=body.persist, replace=body.replace, by=who
    )
    return _registration_info(entry, detailed=True)


@router.get(
    "/v1/model_registrations/{model_type}",
    response_model=list[RegistrationInfo],
    responses=ERROR_RESPONSES,
    summary="List registrations",
)
async def list_registrations(
    request: Request, model_type: str, detailed: bool = Query(False)
) -> list[dict[str, Any]]:
    _check_type(model_type)
    await _registry(request).sync()
    return [_registration_info(e, detailed) for e in _registry(request).entries()]


@router.get(
    "/v1/model_registrations/{model_type}/{model_name:path}",
    response_model=RegistrationInfo,
    responses=ERROR_RESPONSES,
    summary="One registration",
)
async def get_registration(request: Request, model_type: str, model_name: str) -> dict[str, Any]:
    _check_type(model_type)
    await _registry(request).sync()
    return _registration_info(_registry(request).entry(model_name), detailed=True)


@router.delete(
    "/v1/model_registrations/{model_type}/{model_name:path}",
    response_model=RegistrationInfo,
    responses=_CHANGE_RESPONSES,
    summary="Unregister a model",
)
async def unregister_model(request: Request, model_type: str, model_name: str) -> dict[str, Any]:
    who = require_admin(request)
    _check_type(model_type)
    entry = await _registry(request).unregister(model_name, by=who)
    return _registration_info(entry, detailed=False)


def _registration_info(entry: Entry, detailed: bool) -> dict[str, Any]:
    summary = {
        "model_name": entry.registration.model_name,
        "is_builtin": entry.origin == "builtin",
        "origin": entry.origin,
        "persisted": entry.persisted,
        "scope": "process"
        if entry.origin in ("api", "startup") and not entry.persisted
        else "shared",
    }
    return {**entry.registration.public(), **summary} if detailed else summary


# Launched models -------------------------------------------------------------------------


@router.get("/v1/cluster/auth", summary="Xinference: whether clients must send a key")
async def cluster_auth(request: Request) -> dict[str, Any]:
    settings = state.settings(request)
    return {"auth": settings.auth_enabled or bool(settings.admin_keys)}


@router.post(
    "/v1/models",
    response_model=LaunchResult,
    responses=_CHANGE_RESPONSES,
    summary="Launch a registered model",
)
async def launch_model(
    request: Request,
    body: LaunchRequest,
    wait_ready: bool = Query(True, description="Answer once the model is ready (or failed)"),
) -> LaunchResult:
    who = require_admin(request)
    handle = await _registry(request).launch(body, by=who, wait=wait_ready)
    return LaunchResult(model_uid=handle.uid, state=handle.state.value, error=handle.error)


@router.get("/v1/models", response_model=ModelList, summary="Launched models")
async def list_models(request: Request) -> ModelList:
    registry = _registry(request)
    await registry.sync()
    cards = [_card(request, h) for h in registry.handles()]
    cards += [_pending_card(request, s) for s in registry.pending()]
    return ModelList(data=cards)


@router.get(
    "/v1/models/{model_uid:path}",
    response_model=ModelCard,
    responses=ERROR_RESPONSES,
    summary="One launched model (Xinference's describe)",
)
async def get_model(request: Request, model_uid: str) -> ModelCard:
    registry = _registry(request)
    await registry.sync()
    for stored in registry.pending():
        if stored.uid == model_uid:
            return _pending_card(request, stored)
    return _card(request, registry.handle(model_uid))


@router.delete(
    "/v1/models/{model_uid:path}",
    response_model=TerminateResult,
    responses=_CHANGE_RESPONSES,
    summary="Terminate a model: drain its requests, then free it",
)
async def terminate_model(request: Request, model_uid: str) -> TerminateResult:
    who = require_admin(request)
    result = await _registry(request).terminate(model_uid, by=who)
    return TerminateResult(**result)


def _card(request: Request, handle: ModelHandle) -> ModelCard:
    return ModelCard(**handle.describe(), address=str(request.base_url).rstrip("/"))


def _pending_card(request: Request, stored: StoredLaunch) -> ModelCard:
    """A launch the desired state holds that this process has not started yet."""
    devices = stored.request.devices or state.settings(request).devices
    return ModelCard(
        id=stored.uid,
        created=int(stored.at),
        model_name=stored.request.model_name,
        model_uid=stored.uid,
        state="pending",
        desired="launched",
        replica=stored.request.replica_count or len(devices),
        replicas=stored.request.replica_count or len(devices),
        devices=list(devices),
        address=str(request.base_url).rstrip("/"),
    )
