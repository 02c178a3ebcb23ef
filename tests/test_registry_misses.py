"""A request for a name not running here reads the shared store (on the event loop) at most
once a second per name, and not at all while the store is down; `rerankd_registry_store_up`
says which. A fake store counts the reads; a fake clock stands in for the second."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rerankd.config import Settings
from rerankd.errors import ModelNotFound, NotReady
from rerankd.metrics import Metrics
from rerankd.registry import LaunchRequest, ModelRegistry
from rerankd.registry.desired import Snapshot, StoredLaunch, StoreUnavailable
from rerankd.registry.misses import MissMemo
from tests.server import metric


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """The reads a request makes (`launch`) and the poll's (`version`, `snapshot`)."""

    description = "a fake store"

    def __init__(self) -> None:
        self.down = False
        self.launch_reads: list[str] = []
        self.launches: dict[str, StoredLaunch] = {}

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the fake store is down")

    def version(self) -> int:
        self._check()
        return 1

    def snapshot(self) -> Snapshot:
        self._check()
        return Snapshot(version=1)

    def launch(self, uid: str) -> StoredLaunch | None:
        self.launch_reads.append(uid)
        self._check()
        return self.launches.get(uid)

    def close(self) -> None:
        return None


def test_a_miss_is_remembered_for_its_seconds_and_the_oldest_goes_first() -> None:
    clock = Clock()
    memo = MissMemo(seconds=1.0, size=3, clock=clock)
    memo.add("a")
    assert memo.missed("a") and not memo.missed("b")
    clock.now += 0.99
    assert memo.missed("a")
    clock.now += 0.02
    assert not memo.missed("a") and len(memo) == 0  # forgotten, and dropped
    for name in ("a", "b", "c"):
        memo.add(name)
    memo.add("a")  # re-added: the newest now
    memo.add("d")  # full: "b", the oldest, goes
    assert len(memo) == 3
    assert not memo.missed("b") and all(memo.missed(n) for n in ("a", "c", "d"))
    memo.clear()
    assert len(memo) == 0


@pytest.fixture
def registry(tmp_path: Path) -> tuple[ModelRegistry, CountingStore, Clock]:
    store, clock = CountingStore(), Clock()
    registry = ModelRegistry(Settings(data_dir=tmp_path), Metrics())
    registry._desired = store
    registry._misses = MissMemo(clock=clock)
    return registry, store, clock


def store_up(registry: ModelRegistry) -> float:
    return metric(registry.metrics.render().decode(), "rerankd_registry_store_up")


def test_a_flood_for_an_unknown_name_reads_the_store_once_a_second(
    registry: tuple[ModelRegistry, CountingStore, Clock],
) -> None:
    registry_, store, clock = registry
    for _ in range(50):
        with pytest.raises(ModelNotFound):
            registry_.readiness("nobody")
    assert store.launch_reads == ["nobody"]
    with pytest.raises(ModelNotFound):
        registry_.readiness("somebody")  # another name is read
    clock.now += 1.01
    with pytest.raises(ModelNotFound):
        registry_.readiness("nobody")
    assert store.launch_reads == ["nobody", "somebody", "nobody"]

    # A name launched elsewhere is found at once; a name missed before is found once the
    # poll applies a new state (the misses are forgotten then).
    request = LaunchRequest(model_name="elsewhere", model_uid="elsewhere")
    store.launches["elsewhere"] = StoredLaunch(request, by="t", at=0.0)
    store.launches["nobody"] = StoredLaunch(request, by="t", at=0.0)
    with pytest.raises(NotReady):
        registry_.readiness("elsewhere")
    with pytest.raises(ModelNotFound):
        registry_.readiness("nobody")  # still remembered
    asyncio.run(registry_.sync())
    with pytest.raises(NotReady):
        registry_.readiness("nobody")


def test_while_the_store_is_down_requests_do_not_read_it(
    registry: tuple[ModelRegistry, CountingStore, Clock],
) -> None:
    registry_, store, _ = registry
    asyncio.run(registry_.sync())
    assert store_up(registry_) == 1
    store.down = True
    asyncio.run(registry_.sync())  # the poll finds it down
    assert store_up(registry_) == 0
    for name in ("a", "b", "c"):
        with pytest.raises(ModelNotFound):
            registry_.readiness(name)
    assert store.launch_reads == []

    store.down = False
    asyncio.run(registry_.sync())  # back
    assert store_up(registry_) == 1
    with pytest.raises(ModelNotFound):
        registry_.readiness("a")
    assert store.launch_reads == ["a"]

    # A request's own failed read says it is down too: the next name waits on nothing.
    store.down = True
    for name in ("d", "e", "f"):
        with pytest.raises(ModelNotFound):
            registry_.readiness(name)
    assert store.launch_reads == ["a", "d"]
    assert store_up(registry_) == 0
