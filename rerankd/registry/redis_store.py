"""The desired state of a fleet in Redis (`--redis-url`): two hashes and a version counter.

A write WATCHes the keys it checks, then stores the row and bumps the version in one MULTI/EXEC;
if another process changed them meanwhile, it reads again and retries. The calls have a short
timeout: a Redis that is down or stalled refuses the change (503) instead of holding it, and the
processes keep serving what they run until it is back. Redis must persist (AOF) since the
registrations live only here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from rerankd.errors import Conflict
from rerankd.registry.desired import (
    Snapshot,
    StoredLaunch,
    StoreUnavailable,
    check_put,
    check_unlaunched,
    collect,
    decode_launch,
    encode_launch,
    encode_registration,
)
from rerankd.registry.spec import LaunchRequest, Registration

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

PREFIX = "rerankd:registry:v1:"
_T = TypeVar("_T")


class RedisStore:
    def __init__(self, url: str, timeout: float = 1.0, prefix: str = PREFIX) -> None:
        from redis import Redis

        self.description = "redis"
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._registrations = prefix + "registrations"
        self._launches = prefix + "launches"
        self._version = prefix + "version"

    def _run(self, work: Callable[[], _T]) -> _T:
        from redis.exceptions import RedisError

        try:
            return work()
        except RedisError as exc:
            raise StoreUnavailable(
                f"the registry store (Redis) is unavailable ({type(exc).__name__}); "
                "nothing was changed"
            ) from exc

    def _transaction(
        self,
        keys: list[str],
        check: Callable[[Pipeline], None],
        write: Callable[[Pipeline], object],
    ) -> int:
        """WATCH, check, then MULTI: write and bump the version; retried if raced."""
        from redis.exceptions import WatchError

        def attempt() -> int:
            with self._redis.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(*keys, self._version)  # type: ignore[no-untyped-call]
                        check(pipe)
                        pipe.multi()
                        write(pipe)
                        pipe.incr(self._version)
                        return int(pipe.execute()[-1])
                    except WatchError:
                        continue

        return self._run(attempt)

    def version(self) -> int:
        return self._run(lambda: int(self._redis.get(self._version) or 0))

    def snapshot(self) -> Snapshot:
        def read() -> Snapshot:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._version)
                pipe.hgetall(self._registrations)
                pipe.hgetall(self._launches)
                version, regs, runs = pipe.execute()
            return collect(int(version or 0), _text_keys(regs), _text_keys(runs), "redis")

        return self._run(read)

    def put_registration(self, registration: Registration, *, by: str, replace: bool) -> int:
        body = encode_registration(registration, by)
        name = registration.model_name

        def check(pipe: Pipeline) -> None:
            check_put(bool(pipe.hexists(self._registrations, name)), name, replace)

        return self._transaction(
            [self._registrations], check, lambda pipe: pipe.hset(self._registrations, name, body)
        )

    def delete_registration(self, name: str) -> int:
        def check(pipe: Pipeline) -> None:
            check_unlaunched(name, _text_keys(pipe.hgetall(self._launches)))

        return self._transaction(
            [self._registrations, self._launches],
            check,
            lambda pipe: pipe.hdel(self._registrations, name),
        )

    def put_launch(self, request: LaunchRequest, *, by: str) -> int:
        body = encode_launch(request, by)
        uid = request.model_uid or request.model_name

        def check(pipe: Pipeline) -> None:
            if pipe.hexists(self._launches, uid):
                raise Conflict(f"a model runs as {uid!r} already")

        return self._transaction(
            [self._launches], check, lambda pipe: pipe.hset(self._launches, uid, body)
        )

    def delete_launch(self, uid: str) -> int:
        return self._transaction(
            [self._launches], lambda pipe: None, lambda pipe: pipe.hdel(self._launches, uid)
        )

    def launch(self, uid: str) -> StoredLaunch | None:
        raw = self._run(lambda: self._redis.hget(self._launches, uid))
        if raw is None:
            return None
        try:
            return decode_launch(uid, raw)
        except (ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        self._redis.close()


def _text_keys(mapping: object) -> dict[str, str | bytes]:
    if not isinstance(mapping, dict):
        return {}
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v
        for k, v in mapping.items()
    }
