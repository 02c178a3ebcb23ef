"""The shared desired state (SQLite in WAL mode, and Redis) without a server.

Writes from many threads and connections at once all land (no read-modify-write loses one),
each write bumps the version, a conflict is refused and changes nothing, a row that no longer
validates is skipped with a warning while the rest stand, text that is not valid Unicode is
refused before anything is kept, and a Redis that is down refuses the change (503).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from rerankd.errors import Conflict, InvalidInput
from rerankd.registry import LaunchRequest, Registration
from rerankd.registry.desired import DesiredStore, StoreUnavailable
from rerankd.registry.redis_store import PREFIX, RedisStore
from rerankd.registry.sqlite_store import SqliteStore
from tests.test_redis import RedisServer


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.kill()


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str):
    """Opens another connection to one fresh store (as another process would)."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path)
    prefix = f"test:{tmp_path.name}:"
    return lambda: RedisStore(redis_url, prefix=prefix)


def registration(name: str, **extra: object) -> Registration:
    return Registration(model_name=name, model_id=f"org/{name}", **extra)


def test_concurrent_writes_through_many_connections_all_land(opener) -> None:
    stores: list[DesiredStore] = [opener() for _ in range(4)]
    names = [f"model-{i}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        versions = list(
            pool.map(
                lambda i: stores[i % 4].put_registration(
                    registration(names[i]), by="t", replace=False
                ),
                range(len(names)),
            )
        )
    assert sorted(versions) == list(range(1, 25))  # every write bumped the version once
    snapshot = stores[3].snapshot()
    assert sorted(snapshot.registrations) == sorted(names) and snapshot.version == 24


def test_conflicts_are_refused_and_change_nothing(opener) -> None:
    store: DesiredStore = opener()
    store.put_registration(registration("a"), by="t", replace=False)
    with pytest.raises(Conflict):
        store.put_registration(registration("a", language=["de"]), by="t", replace=False)
    version = store.put_launch(LaunchRequest(model_name="a", model_uid="a-1"), by="t")
    with pytest.raises(Conflict):
        store.put_launch(LaunchRequest(model_name="a", model_uid="a-1"), by="t")
    with pytest.raises(Conflict, match="terminate it first"):
        store.delete_registration("a")
    assert store.version() == version
    assert store.snapshot().registrations["a"].registration.language == []
    store.delete_launch("a-1")
    store.delete_registration("a")
    assert store.snapshot().registrations == {} and store.launch("a-1") is None


def test_text_that_is_not_unicode_is_refused_before_it_is_kept(opener) -> None:
    store: DesiredStore = opener()
    # The registration's own validation refuses it first; the store refuses it again when a
    # registration reaches it unvalidated (built by code, not by a request).
    with pytest.raises(ValueError, match="not valid Unicode"):
        registration("bad", type="x\udcff")
    unchecked = registration("bad").model_copy(update={"type": "x\udcff"})
    with pytest.raises(InvalidInput):
        store.put_registration(unchecked, by="t", replace=False)
    assert store.version() == 0 and store.snapshot().registrations == {}


def test_one_bad_row_is_skipped_the_rest_stand(tmp_path: Path, redis_url: str) -> None:
    sqlite = SqliteStore(tmp_path)
    sqlite.put_registration(registration("good"), by="t", replace=False)
    db = sqlite3.connect(tmp_path / "registry.sqlite3")
    db.execute("INSERT INTO registrations VALUES ('broken', '{\"registration\": {}}')")
    db.execute("INSERT INTO launches VALUES ('torn', '{not json')")
    db.commit()
    snapshot = sqlite.snapshot()
    assert list(snapshot.registrations) == ["good"] and snapshot.launches == {}
    assert len(snapshot.problems) == 2 and "'broken' skipped" in snapshot.problems[0]

    store = RedisStore(redis_url, prefix="bad-row:")
    store.put_registration(registration("good"), by="t", replace=False)
    redis.Redis.from_url(redis_url).hset("bad-row:registrations", "evil", b"\xff\xfe")
    snapshot = store.snapshot()
    assert list(snapshot.registrations) == ["good"] and "'evil' skipped" in snapshot.problems[0]


def test_a_redis_that_is_down_refuses_the_change() -> None:
    from tests.server import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, prefix=PREFIX)
    with pytest.raises(StoreUnavailable) as refused:
        store.put_registration(registration("a"), by="t", replace=False)
    assert refused.value.status == 503 and "nothing was changed" in refused.value.message
