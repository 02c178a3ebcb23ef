"""Who is calling (API keys, JWT) and how often they may call (rate limits)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from rerankd.config import Settings
from rerankd.errors import RateLimited, Unauthorized

logger = logging.getLogger(__name__)


def credential(headers: dict[str, str]) -> str | None:
    """The token from `Authorization: Bearer ...` or `X-API-Key`."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's hash, a JWT subject, or (unauthenticated) a client address."""

    name: str
    authenticated: bool = False
    admin: bool = False  # may change the model registry


class Authenticator:
    """Checks a credential against API keys (constant time) and JWTs; returns a principal.

    Admin keys (and JWTs carrying the admin scope) may also change the model registry. They
    can be set without ordinary keys: then reranking stays open and only changes need a key.
    """

    def __init__(self, settings: Settings) -> None:
        keys = list(settings.api_keys) + settings.file_keys()
        self._keys = [key.encode() for key in keys if key]
        self._admin_keys = [key.encode() for key in settings.admin_keys if key]
        self._secret = name_secret(settings.server_secret, self._keys + self._admin_keys)
        self._admin_scope = settings.jwt_admin_scope
        self._jwt_keys: list[tuple[str, str]] = []
        if settings.jwt_secret:
            self._jwt_keys.append(("HS256", settings.jwt_secret))
        if settings.jwt_public_key_file:
            self._jwt_keys.append(("RS256", Path(settings.jwt_public_key_file).read_text()))
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self.required = bool(self._keys or self._jwt_keys)  # every request needs a credential
        self.enabled = self.required or bool(self._admin_keys)

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing credentials: send Authorization: Bearer <key> or X-API-Key")
        candidate = token.encode()
        name = "key:" + hmac.new(self._secret, candidate, hashlib.sha256).hexdigest()[:16]
        if _any_equal(candidate, self._admin_keys):
            return Principal(name, authenticated=True, admin=True)
        if _any_equal(candidate, self._keys):
            return Principal(name, authenticated=True)
        if self._jwt_keys and token.count(".") == 2:
            claims = self._decode_jwt(token)
            return Principal(
                "jwt:" + str(claims.get("sub", "anonymous")),
                authenticated=True,
                admin=self._admin_scope in _scopes(claims),
            )
        raise Unauthorized("invalid API key")

    def _decode_jwt(self, token: str) -> dict[str, Any]:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        # The header is the client's: "alg" may be missing, null or not a string at all.
        if not isinstance(algorithm, str) or (key := dict(self._jwt_keys).get(algorithm)) is None:
            accepted = ", ".join(alg for alg, _ in self._jwt_keys)
            raise Unauthorized(
                f"invalid token: algorithm {algorithm!r} is not accepted ({accepted})"
            )
        required = ["exp"] + (["aud"] if self._audience else []) + (["iss"] if self._issuer else [])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": required},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return claims


def name_secret(configured: str | None, keys: list[bytes]) -> bytes:
    """The HMAC key that names API keys in logs, rate limits and /info.

    A bare hash of a key can be checked against a guessed key by anyone who reads a log; the
    keyed hash cannot without the secret. Without `--server-secret` it is derived from all the
    configured keys, so every process with the same keys names a key alike (rate limits in
    Redis stay shared) while nobody holding fewer than all of them can compute it.
    """
    if configured:
        return configured.encode()
    return hashlib.sha256(b"rerankd-key-names\0" + b"\0".join(sorted(keys))).digest()


def _any_equal(candidate: bytes, keys: list[bytes]) -> bool:
    matched = False
    for key in keys:  # every key is compared, so timing says nothing about which
        matched |= hmac.compare_digest(candidate, key)
    return matched


def _scopes(claims: dict[str, Any]) -> set[str]:
    """OAuth2's space-separated `scope`, or a list in `scope` or `scp`."""
    found: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(str(v) for v in value)
    return found


class RateLimiter:
    """Per-principal limits with the `limits` library; Redis storage shares them across pods."""

    def __init__(self, spec: str, redis_url: str | None) -> None:
        from limits import parse_many
        from limits.aio.strategies import MovingWindowRateLimiter
        from limits.storage import storage_from_string

        self._limits = parse_many(spec)
        if redis_url:
            uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            storage = storage_from_string(uri, implementation="redispy")
        else:
            storage = storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(storage)
        self._warned = False

    async def check(self, principal: str) -> None:
        try:
            for limit in self._limits:
                if not await self._limiter.hit(limit, "rerankd", principal):
                    stats = await self._limiter.get_window_stats(limit, "rerankd", principal)
                    retry = max(1.0, stats.reset_time - time.time())
                    raise RateLimited(
                        f"rate limit {limit} exceeded; retry in {retry:.0f}s", retry_after=retry
                    )
        except RateLimited:
            raise
        except Exception as exc:  # noqa: BLE001 - a storage outage must not block traffic
            if not self._warned:
                logger.warning("rate-limit storage unavailable, not limiting: %s", exc)
                self._warned = True
