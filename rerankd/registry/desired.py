"""The desired state every process of a deployment reconciles to: registrations and launches.

A fleet (gunicorn workers on one host, pods behind a Service) is one service only if a change
made through any process reaches all of them. The desired state lives in one store: Redis when
`--redis-url` is set, else a SQLite file (WAL) in the data directory. Every write is one
transaction that checks what it must (a name taken, a model still launched), stores the
validated record and bumps a version counter; a process compares that counter with the one it
last applied, cheaply, and reads the whole state only when it moved.

Entries are stored as JSON, one per row (or hash field): one entry that no longer validates is
skipped with a warning, never the whole store.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from rerankd.errors import Conflict, InvalidInput, RerankError
from rerankd.registry.spec import LaunchRequest, Registration
from rerankd.validation import describe_validation_error

logger = logging.getLogger(__name__)


class StoreUnavailable(RerankError):
    """The shared store refused or could not take a change: nothing was changed."""

    status = 503
    type = "store_unavailable"
    retry_after = 2.0


@dataclass(frozen=True)
class StoredRegistration:
    registration: Registration
    by: str
    at: float


@dataclass(frozen=True)
class StoredLaunch:
    """A launch every process should run: the request (its uid set), who asked, when."""

    request: LaunchRequest
    by: str
    at: float

    @property
    def uid(self) -> str:
        return self.request.model_uid or self.request.model_name


@dataclass(frozen=True)
class Snapshot:
    version: int
    registrations: dict[str, StoredRegistration] = field(default_factory=dict)
    launches: dict[str, StoredLaunch] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


class DesiredStore(Protocol):
    """What the registry needs from a store; every method may raise `StoreUnavailable`."""

    description: str

    def version(self) -> int: ...

    def snapshot(self) -> Snapshot: ...

    def put_registration(self, registration: Registration, *, by: str, replace: bool) -> int: ...

    def delete_registration(self, name: str) -> int: ...

    def put_launch(self, request: LaunchRequest, *, by: str) -> int: ...

    def delete_launch(self, uid: str) -> int: ...

    def launch(self, uid: str) -> StoredLaunch | None: ...

    def close(self) -> None: ...


# Encoding: what a row holds ------------------------------------------------------------------


def encode_registration(registration: Registration, by: str) -> str:
    return _encode({"registration": registration.public(), "by": by, "at": time.time()})


def encode_launch(request: LaunchRequest, by: str) -> str:
    body = request.model_dump(exclude_none=True)
    return _encode({"launch": body, "by": by, "at": time.time()})


def _encode(document: dict[str, Any]) -> str:
    """JSON that is also valid UTF-8: a lone surrogate is refused here, before anything is kept."""
    text = json.dumps(document, ensure_ascii=False, sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the registration holds text that is not valid Unicode") from None
    return text


def decode_registration(key: str, text: str | bytes) -> StoredRegistration:
    document = _decode(text)
    registration = Registration.model_validate(document["registration"])
    if registration.model_name != key:
        raise ValueError(f"stored under {key!r} but named {registration.model_name!r}")
    return StoredRegistration(registration, str(document.get("by", "")), float(document["at"]))


def decode_launch(key: str, text: str | bytes) -> StoredLaunch:
    document = _decode(text)
    request = LaunchRequest.model_validate(document["launch"])
    if request.model_uid != key:
        raise ValueError(f"stored under {key!r} but its uid is {request.model_uid!r}")
    return StoredLaunch(request, str(document.get("by", "")), float(document["at"]))


def _decode(text: str | bytes) -> dict[str, Any]:
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def collect(
    version: int,
    registrations: dict[str, str | bytes],
    launches: dict[str, str | bytes],
    where: str,
) -> Snapshot:
    """Decode every row; a bad one is reported and skipped, the rest stand."""
    problems: list[str] = []
    regs: dict[str, StoredRegistration] = {}
    runs: dict[str, StoredLaunch] = {}
    for key, text in sorted(registrations.items()):
        try:
            regs[key] = decode_registration(key, text)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            problems.append(f"{where}: registration {key!r} skipped: {_reason(exc)}")
    for key, text in sorted(launches.items(), key=lambda kv: _at(kv[1])):
        try:
            runs[key] = decode_launch(key, text)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            problems.append(f"{where}: launch {key!r} skipped: {_reason(exc)}")
    for problem in problems:
        logger.warning(problem)
    return Snapshot(version, regs, runs, tuple(problems))


def check_put(existing: bool, name: str, replace: bool) -> None:
    if existing and not replace:
        raise Conflict(
            f"a model named {name!r} is already registered; unregister it first or ask for replace"
        )


def check_unlaunched(name: str, launches: dict[str, str | bytes]) -> None:
    """A registration that a launch still uses stays: terminate first."""
    running = []
    for uid, text in launches.items():
        try:
            if _decode(text)["launch"]["model_name"] == name:
                running.append(uid)
        except (ValueError, KeyError, TypeError):
            continue
    if running:
        raise Conflict(
            f"{name!r} is launched as {', '.join(map(repr, sorted(running)))}; terminate it first"
        )


def _at(text: str | bytes) -> float:
    try:
        return float(_decode(text)["at"])
    except (ValueError, KeyError, TypeError):
        return 0.0


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc.errors())
    return f"{type(exc).__name__}: {exc}"[:300]
