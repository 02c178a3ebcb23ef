"""Who may change the model registry and read the server's details.

Reranking is open or keyed (`security.py`); changing what a server serves, and reading where
its models live, its pid and who launched what, are admin matters. With no credential
configured at all, a server that listens on loopback only trusts its local callers (a
developer's laptop, the test suite); one that listens beyond loopback refuses such changes
unless `--open-registry` says otherwise.
"""

from __future__ import annotations

import ipaddress

from fastapi import Request

from rerankd.api import state
from rerankd.api.security import Principal
from rerankd.config import Settings
from rerankd.errors import Forbidden, Unauthorized


def is_loopback(host: str | None) -> bool:
    """Whether an address (or `localhost`) is a loopback one."""
    if not host:
        return False
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def open_to_local(settings: Settings, request: Request) -> bool:
    """No credential configured: whether this caller counts as an admin.

    Both the configured bind address and the address the connection arrived on must be
    loopback: a server bound to 0.0.0.0 (a container) is reachable from outside even when
    `--host` was left at its default, e.g. under gunicorn.
    """
    if settings.open_registry:
        return True
    server = request.scope.get("server")
    return is_loopback(settings.host) and is_loopback(server[0] if server else None)


def principal(request: Request) -> Principal | None:
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else None


def is_admin(request: Request) -> bool:
    """Whether the caller may change the registry and read the server's details."""
    settings = state.settings(request)
    caller = principal(request)
    if caller is not None and caller.admin:
        return True
    if settings.auth_enabled or settings.admin_enabled:
        return settings.open_registry and caller is not None and caller.authenticated
    return open_to_local(settings, request)


def require_admin(request: Request) -> str:
    """The caller's name for the change log, or 401/403 when they may not change the registry."""
    settings = state.settings(request)
    caller = principal(request)
    who = caller.name if caller else "unknown"
    if is_admin(request):
        return who
    if not (settings.auth_enabled or settings.admin_enabled):
        raise Forbidden(
            "registry changes need an admin credential: this server listens beyond loopback "
            "and has none configured; start it with --admin-keys (or RERANKD_ADMIN_KEYS), or "
            "--open-registry to let anyone change it"
        )
    if caller is None or not caller.authenticated:
        raise Unauthorized("registry changes need an admin credential")
    raise Forbidden(
        "this credential may rerank but not change the model registry; use an admin key "
        f"(--admin-keys) or a JWT with scope {settings.jwt_admin_scope!r}"
    )
