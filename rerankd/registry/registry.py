"""`ModelRegistry`: the registrations a server knows and the models it runs.

Registrations come from four places, in this order (a later one may not take a name an
earlier one holds): the built-in model, the operator's `--registrations-file`, the shared
desired state (desired.py: Redis or the data directory's SQLite file), and the API. Models are
launched from a registration under a uid (the name clients send as `model`), loaded in the
background on one loader thread, and terminated by draining their leases first. The start-up
`--model` list goes through the same launch path, synchronously, before the server reports
ready, and so do the launches the desired state holds.

A change made through the API with `persist: true` (and any launch of a shared registration)
is written to the store first, and applied here only once the store took it; every other
process applies it when `follow()` sees the store's version move. `persist: false` keeps a
registration (and its launches) in this process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rerankd.calibration.attach import identity_of
from rerankd.calibration.attach import load_all as load_calibrations
from rerankd.calibration.attach import unmatched as unmatched_calibrations
from rerankd.calibration.model import Calibration
from rerankd.config import Settings
from rerankd.errors import Conflict, LoadFailed, ModelNotFound, NotReady, RerankError
from rerankd.metrics import Metrics
from rerankd.models import ModelSpec
from rerankd.registry.cores import CoreBudget
from rerankd.registry.desired import DesiredStore, Snapshot, StoredLaunch, StoreUnavailable
from rerankd.registry.handle import ModelHandle, ModelState, Placement
from rerankd.registry.loader import (
    LoaderThread,
    close_engines,
    give_memory_back,
    load_replicas,
    settle_heap,
)
from rerankd.registry.misses import MissMemo
from rerankd.registry.spec import (
    LaunchRequest,
    Origin,
    Registration,
    builtin_registration,
)
from rerankd.registry.store import RegistrationStore, read_registrations_file

logger = logging.getLogger(__name__)
changes = logging.getLogger("rerankd.registry.changes")

# What clients send when the user named no model: infinity-client's default, and empty.
DEFAULT_MODEL_NAMES = frozenset({"", "default/not-specified"})
STARTUP = "startup"
RECONCILE = "reconcile"
POLL_SECONDS = 0.25  # how often a process compares the store's version with its own


@dataclass
class Entry:
    registration: Registration
    origin: Origin
    persisted: bool = False


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = RegistrationStore(settings.data_dir)
        self.cores = CoreBudget(settings.cpu_cores)
        self.problems: list[str] = []
        self._entries: dict[str, Entry] = {}
        self._handles: dict[str, ModelHandle] = {}  # uid -> handle, in launch order
        self._loader = LoaderThread()
        self._loading: dict[ModelHandle, asyncio.Future[None]] = {}
        self.calibrations: list[Calibration] = []  # --calibration files, read at start-up
        self._desired: DesiredStore | None = None
        self._snapshot = Snapshot(version=-1)  # the desired state last applied here
        self._changing: asyncio.Lock | None = None  # one change or reconcile at a time
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._warned: set[str] = set()
        self._store_down_logged = 0.0
        # Whether the store answered its last read (start-up, the poll, `sync`): while it is
        # down, a request for a name not running here does not wait on it.
        self._store_up = True
        self._misses = MissMemo()  # names the store had no launch of, a second ago
        self._store_reached(True)  # until a read says otherwise

    @property
    def desired(self) -> DesiredStore:
        """The shared store, opened on first use (Redis with --redis-url, else SQLite)."""
        if self._desired is None:
            if self.settings.redis_url:
                from rerankd.registry.redis_store import RedisStore

                self._desired = RedisStore(self.settings.redis_url)
            else:
                from rerankd.registry.sqlite_store import SqliteStore

                self._desired = SqliteStore(self.settings.data_dir)
        return self._desired

    def _lock(self) -> asyncio.Lock:
        if self._changing is None:
            self._changing = asyncio.Lock()
        return self._changing

    # Start-up ----------------------------------------------------------------------------

    def start(self) -> None:
        """Read the registrations, then load the start-up models (blocking; run in a thread)."""
        self._add(builtin_registration(), "builtin")
        if self.settings.registrations_file is not None:
            for registration in read_registrations_file(
                self.settings.registrations_file, self.problems
            ):
                self._add(registration, "file")
        self._import_legacy_file()
        try:
            snapshot = self.desired.snapshot()
            self._store_reached(True)
        except StoreUnavailable as exc:
            snapshot = Snapshot(version=-1)
            self._store_reached(False)
            self._problem(f"{exc.message}; starting without the shared registrations")
        self.problems.extend(snapshot.problems)
        for name, stored in snapshot.registrations.items():
            if name in self._entries:
                self._problem(f"shared registration {name!r} skipped: the name is taken here")
            else:
                self._entries[name] = Entry(stored.registration, "api", persisted=True)

        self.calibrations = load_calibrations(self.settings.calibration)
        launches = [self._startup_launch(text) for text in self.settings.model]
        cpu = [self._placement(r).cpu_replicas for r in launches]
        for index, request in enumerate(launches):
            if request.model_uid in self._handles:
                raise ValueError(
                    f"two models are served as {request.model_uid!r}; give one a name with SPEC=NAME"
                )
            handle = self._new_handle(request, STARTUP, planned=sum(cpu[index + 1 :]))
            handle.registration = self._with_server_defaults(handle.registration)
            self._load(handle)
            if handle.state is ModelState.FAILED:
                raise LoadFailed(f"could not load {handle.uid!r}: {handle.error}")
        # The launches every process serves load before this one takes traffic too; one that
        # fails here is only a failed state (another process may load it fine).
        for handle in self._adopt_launches(snapshot):
            self._load(handle)
        self._snapshot = snapshot
        unmatched_calibrations(
            self.calibrations,
            [identity_of(h.engine.model) for h in self._handles.values() if h.engines],
        )

    def _import_legacy_file(self) -> None:
        """`registrations.json` from before the shared store: its entries move into the store."""
        if not self.store.path.exists():
            return
        imported = 0
        for registration in self.store.load():
            try:
                self.desired.put_registration(registration, by="import", replace=False)
                imported += 1
            except (Conflict, StoreUnavailable) as exc:
                self._problem(f"{registration.model_name!r} not imported: {exc.message}")
        self.problems.extend(self.store.problems)
        self.store.retire(imported)

    def _with_server_defaults(self, registration: Registration) -> Registration:
        """`--family` / `--instruction` apply to start-up models that do not set their own."""
        defaults = {
            "family": registration.family or self.settings.family,
            "instruction": registration.instruction or self.settings.instruction,
            "family_options": registration.family_options or self.settings.family_defaults or None,
        }
        return registration.model_copy(update=defaults)

    def _startup_launch(self, text: str) -> LaunchRequest:
        """`--model NAME` launches a registration; any other spec registers itself first."""
        spec = ModelSpec.parse(
            text,
            family=self.settings.family,
            instruction=self.settings.instruction,
            family_options=self.settings.family_defaults,
        )
        entry = self._entries.get(spec.source)
        if entry is None or spec.revision:
            registration = Registration.from_spec(spec)
            existing = self._entries.get(registration.model_name)
            if existing is None:
                self._add(registration, "startup")
            elif existing.registration.source != registration.source:
                raise ValueError(
                    f"--model {text!r} is served as {registration.model_name!r}, a name that "
                    f"is registered for {existing.registration.source!r}; choose another with "
                    "SPEC=NAME"
                )
            name = registration.model_name
        else:
            name = entry.registration.model_name
        s = self.settings
        return LaunchRequest(
            model_name=name,
            model_uid=spec.served_name or name,
            device=s.devices,
            replicas=len(s.devices) * s.replicas,
            threads=s.threads,
        )

    def _add(self, registration: Registration, origin: Origin, persisted: bool = False) -> None:
        name = registration.model_name
        if name in self._entries:
            held = self._entries[name].origin
            message = f"registration {name!r} from {origin} skipped: the name is taken by {held}"
            self.problems.append(message)
            logger.warning(message)
            return
        self._entries[name] = Entry(registration, origin, persisted)

    # Registrations -----------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def entry(self, name: str) -> Entry:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(repr(n) for n in self._entries)
            raise ModelNotFound(f"no registration named {name!r}; registered: {known}")
        return entry

    async def register(
        self, registration: Registration, *, persist: bool, replace: bool, by: str
    ) -> Entry:
        """Store first (persist: the shared store; else this process), then apply here."""
        name = registration.model_name
        async with self._lock():
            await self._refresh()
            old = self._entries.get(name)
            if old is not None:
                if old.origin in ("builtin", "file"):
                    raise Conflict(
                        f"{name!r} comes from the {old.origin} registrations and is fixed"
                    )
                if not replace:
                    raise Conflict(
                        f"a model named {name!r} is already registered; unregister it first "
                        "or ask for replace"
                    )
                if old.persisted and not persist:
                    raise Conflict(
                        f"{name!r} is shared by every process; replace it with persist: true"
                    )
            if persist:
                version = await asyncio.to_thread(
                    self.desired.put_registration, registration, by=by, replace=replace
                )
                self._seen(version)
            entry = Entry(registration, "api", persisted=persist)
            self._entries[name] = entry
        self._log("register", name, by, persist=persist, replaced=old is not None)
        return entry

    async def unregister(self, name: str, *, by: str) -> Entry:
        async with self._lock():
            await self._refresh()
            entry = self.entry(name)
            if entry.origin in ("builtin", "file"):
                raise Conflict(f"{name!r} comes from the {entry.origin} registrations and is fixed")
            running = [h.uid for h in self._handles.values() if h.registration.model_name == name]
            if running:
                raise Conflict(
                    f"{name!r} is running as {', '.join(map(repr, running))}; terminate it first"
                )
            if entry.persisted:
                self._seen(await asyncio.to_thread(self.desired.delete_registration, name))
            del self._entries[name]
        self.metrics.remove_registration(name)
        self._log("unregister", name, by)
        return entry

    # Launch and terminate ----------------------------------------------------------------

    async def launch(self, request: LaunchRequest, *, by: str, wait: bool) -> ModelHandle:
        """Start loading a registered model in the background; with `wait`, until it is done.

        A shared registration's launch goes to the store first: every process serves it.
        """
        async with self._lock():
            await self._refresh()
            entry = self.entry(request.model_name)  # 404 before anything else
            shared = entry.persisted or entry.origin in ("builtin", "file")
            taken = set(self._snapshot.launches) if shared else set()
            uid = request.model_uid or self._free_uid(request.model_name, taken)
            old = self._handles.get(uid)
            if old is not None:
                if old.state is not ModelState.FAILED:
                    raise Conflict(f"a model runs as {uid!r} already ({old.state.value})")
                if old.desired and shared:  # a failed launch is replaced by a new one
                    self._seen(await asyncio.to_thread(self.desired.delete_launch, uid))
                self._remove(old)
            request = request.model_copy(update={"model_uid": uid})
            if shared:
                self._seen(await asyncio.to_thread(self.desired.put_launch, request, by=by))
            handle = self._new_handle(request, by)
            handle.desired = shared
            task = self._start_loading(handle)
        if wait:
            await asyncio.shield(task)
            if handle.state is ModelState.FAILED:
                raise LoadFailed(f"model {uid!r} failed to load: {handle.error}")
        return handle

    def _start_loading(self, handle: ModelHandle) -> asyncio.Future[None]:
        task = asyncio.ensure_future(self._load_in_time(handle))
        self._loading[handle] = task
        task.add_done_callback(lambda _: self._loading.pop(handle, None))
        return task

    async def _load_in_time(self, handle: ModelHandle) -> None:
        """Load on the loader thread within `--model-load-timeout`, counted from when the load
        starts (not while it queues behind another). Past it the launch fails, and later
        launches get a fresh loader thread: a load stuck on its files (a FIFO, a hung network
        mount) must not stop every launch after it. The stuck load is left to end; what it
        loaded is then closed, never served."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            loop.call_soon_threadsafe(_set_started, started)
            self._load(handle)

        loader = self._loader
        work = loop.run_in_executor(loader, run)
        await asyncio.wait({started, work}, return_when=asyncio.FIRST_COMPLETED)
        timeout = self.settings.model_load_timeout
        try:
            await asyncio.wait_for(asyncio.shield(work), timeout)
        except TimeoutError:
            self._timed_out(handle, loader, timeout)

    def _timed_out(self, handle: ModelHandle, loader: LoaderThread, timeout: float) -> None:
        with handle._lock:
            if handle.state is not ModelState.LOADING:
                return
            handle.state = ModelState.FAILED
            handle.error = (
                f"loading took longer than --model-load-timeout ({timeout:g} s) and was "
                "abandoned; raise the timeout for a large model, or check that its files "
                "can be read"
            )
        if self._loader is loader:
            self._loader = LoaderThread()
            loader.shutdown(wait=False)
        self.metrics.model_load_failures.labels(handle.registration.model_name).inc()
        self.cores.give_back(handle.uid)
        self._set_state_metric(handle)
        logger.error(
            "model %r failed to load: %s", handle.uid, handle.error, extra={"model": handle.uid}
        )

    async def terminate(self, uid: str, *, by: str) -> dict[str, Any]:
        """Take the launch out of the desired state (every process stops it), then stop it here."""
        async with self._lock():
            handle = self._handles.get(uid)
            stored: StoredLaunch | None = None
            if handle is None or handle.desired:
                stored = await asyncio.to_thread(self.desired.launch, uid)
            if handle is None and stored is None:
                raise ModelNotFound(f"no model runs as {uid!r}; {self._served_sentence()}")
            if handle is not None and handle.state is ModelState.DRAINING:
                raise Conflict(f"model {uid!r} is being terminated already")
            if stored is not None:
                self._seen(await asyncio.to_thread(self.desired.delete_launch, uid))
            if handle is None:  # launched elsewhere, never loaded here
                self._log("terminate", stored.request.model_name if stored else uid, by, uid=uid)
                return {"model_uid": uid, "drained_requests": 0, "seconds": 0.0}
            previous = self._drain(handle)
        return await self._stop(handle, previous, by)

    def _drain(self, handle: ModelHandle) -> ModelState:
        """Refuse new leases from now on; returns the state it had."""
        with handle._lock:
            previous, handle.state = handle.state, ModelState.DRAINING
        self._set_state_metric(handle)
        return previous

    async def _stop(self, handle: ModelHandle, previous: ModelState, by: str) -> dict[str, Any]:
        """Let the leased requests finish (the handle is draining), then free the model."""
        uid = handle.uid
        started = time.perf_counter()
        in_flight = handle.in_flight
        drained = await handle.wait_drained(self.settings.request_timeout + 5)
        loading = self._loading.get(handle)
        if loading is not None:
            # The loader thread finishes this load first; it sees `draining`, so never serves it.
            await asyncio.gather(asyncio.shield(loading), return_exceptions=True)
        await asyncio.to_thread(self._free, handle)
        self._seen(0)  # a launch of the same uid may have come while this one drained
        seconds = time.perf_counter() - started
        self._log(
            "terminate",
            handle.registration.model_name,
            by,
            uid=uid,
            state_before=previous.value,
            in_flight=in_flight,
            drained=drained,
            seconds=round(seconds, 3),
        )
        return {"model_uid": uid, "drained_requests": in_flight, "seconds": round(seconds, 3)}

    def _new_handle(self, request: LaunchRequest, by: str, planned: int = 0) -> ModelHandle:
        registration = self.entry(request.model_name).registration
        placement = self._placement(request)
        threads = self.cores.take(
            request.model_uid or "", placement.cpu_replicas, placement.threads, planned
        )
        if placement.cpu_replicas:
            placement = Placement(**{**placement.__dict__, "threads": threads})
        uid = request.model_uid or registration.model_name
        handle = ModelHandle(
            uid=uid, registration=registration, placement=placement, launched_by=by
        )
        self._handles[uid] = handle
        self._set_state_metric(handle)
        self._log(
            "launch",
            registration.model_name,
            by,
            uid=uid,
            devices=list(placement.devices),
            threads_per_replica=placement.threads,
        )
        return handle

    def _placement(self, request: LaunchRequest) -> Placement:
        s = self.settings
        registration = self.entry(request.model_name).registration
        devices = request.devices or s.devices
        replicas = request.replica_count or len(devices)
        max_length = request.max_length or registration.max_length or s.max_length
        if max_length and registration.max_tokens:  # Xinference's max_tokens: the model's limit
            max_length = min(max_length, registration.max_tokens)
        placement = Placement(
            devices=tuple(devices[i % len(devices)] for i in range(replicas)),
            threads=request.threads,
            backend=request.backend or registration.backend or s.backend,
            dtype=request.dtype or registration.dtype or s.dtype,
            max_length=max_length,
        )
        return placement

    def _load(self, handle: ModelHandle) -> None:
        """Runs on the loader thread (or the start-up thread): load, then go ready or failed."""
        name = handle.registration.model_name
        started = time.perf_counter()
        self.metrics.model_loads.labels(name).inc()
        try:
            engines, batcher, identity, calibration = load_replicas(
                handle, self.settings, self.metrics.batch_observer(handle.uid), self.calibrations
            )
        except Exception as exc:  # noqa: BLE001 - a failed load is a state, not a crash
            self.metrics.model_load_failures.labels(name).inc()
            with handle._lock:
                handle.error = _reason(exc)
                if handle.state is ModelState.LOADING:
                    handle.state = ModelState.FAILED
            self.cores.give_back(handle.uid)
            self._set_state_metric(handle)
            logger.error(
                "model %r failed to load: %s",
                handle.uid,
                handle.error,
                exc_info=not isinstance(exc, RerankError),
                extra={"model": handle.uid},
            )
            return
        seconds = time.perf_counter() - started
        with handle._lock:
            abandoned = handle.state is ModelState.FAILED  # past --model-load-timeout
        if abandoned:
            logger.warning(
                "model %r loaded after %.1fs, past its timeout: closed, not served",
                handle.uid,
                seconds,
                extra={"model": handle.uid},
            )
            close_engines(engines)
            batcher.stop()
            return
        settle_heap()
        batcher.start()
        with handle._lock:
            handle.engines, handle.queue, handle.identity = engines, batcher, identity
            handle.calibration = calibration
            handle.load_seconds = seconds
            if handle.state is ModelState.LOADING:
                handle.state = ModelState.READY
        self.metrics.load_seconds.labels(handle.uid).set(seconds)
        self._set_state_metric(handle)
        logger.info(
            "serving %s (%s) as %r, %d replica(s) on %s, in %.1fs",
            handle.engine.model.source,
            handle.engine.backend.description,
            handle.uid,
            len(engines),
            ",".join(handle.placement.devices),
            seconds,
            extra={"model": handle.uid},
        )

    def _free(self, handle: ModelHandle) -> None:
        """Stop the batcher, close the backends, forget the handle, give the memory back."""
        if handle.queue is not None:
            handle.queue.stop()
        handle.queue = None
        close_engines(handle.engines)
        handle.identity = ()
        self._remove(handle)
        give_memory_back()

    def _remove(self, handle: ModelHandle) -> None:
        if self._handles.get(handle.uid) is handle:
            del self._handles[handle.uid]
        self.cores.give_back(handle.uid)
        self.metrics.remove_model(handle.uid)

    def _free_uid(self, name: str, taken: set[str]) -> str:
        if name not in self._handles and name not in taken:
            return name
        return f"{name}-{uuid.uuid4().hex[:8]}"

    # The desired state -------------------------------------------------------------------

    async def follow(self, interval: float = POLL_SECONDS) -> None:
        """Reconcile with the shared store until cancelled (a task of the app's lifespan).

        Polls the version (one indexed read), reads the whole state only when it moved, and
        wakes at once when a request named a model the store launched but this process lacks.
        A store that is down changes nothing here: the running models keep serving.
        """
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self._wake = (loop, wake)
        while True:
            try:
                async with self._lock():
                    await self._refresh()
            except StoreUnavailable as exc:
                self._store_down(exc)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                logger.exception("reconciling with the desired state failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
            wake.clear()

    async def sync(self) -> None:
        """Catch up with the store now (a read route's answer is then as fresh as a write's).

        A store that is down leaves this process's view as it is.
        """
        try:
            async with self._lock():
                await self._refresh()
        except StoreUnavailable as exc:
            self._store_down(exc)

    async def _refresh(self) -> None:
        """Apply the store's state if its version moved (the caller holds the change lock)."""
        version = await asyncio.to_thread(self.desired.version)
        self._store_reached(True)
        if version == self._snapshot.version:
            return
        snapshot = await asyncio.to_thread(self.desired.snapshot)
        self._apply(snapshot)

    def _seen(self, version: int) -> None:
        """Our own write moved the version: re-read on the next round (cheap, and exact)."""
        del version
        self._snapshot = Snapshot(
            -1, self._snapshot.registrations, self._snapshot.launches, self._snapshot.problems
        )

    def _apply(self, snapshot: Snapshot) -> None:
        """Make this process match `snapshot`: registrations, then launches and terminations."""
        for name, stored in snapshot.registrations.items():
            entry = self._entries.get(name)
            if entry is None or entry.persisted:
                if entry is None or entry.registration != stored.registration:
                    self._entries[name] = Entry(stored.registration, "api", persisted=True)
            else:
                self._warn_once(f"shared registration {name!r} skipped: the name is taken here")
        for name, entry in list(self._entries.items()):
            if entry.persisted and name not in snapshot.registrations:
                del self._entries[name]
        for handle in self._adopt_launches(snapshot):
            self._start_loading(handle)
        for handle in list(self._handles.values()):
            if (
                handle.desired
                and handle.uid not in snapshot.launches
                and handle.state is not ModelState.DRAINING
            ):
                previous = self._drain(handle)
                asyncio.ensure_future(self._stop(handle, previous, RECONCILE))
        self._snapshot = snapshot
        self._misses.clear()  # the state moved: a name missed a moment ago may be launched

    def _adopt_launches(self, snapshot: Snapshot) -> list[ModelHandle]:
        """Handles for the desired launches this process does not run yet (not loaded)."""
        adopted = []
        for uid, stored in snapshot.launches.items():
            held = self._handles.get(uid)
            if held is not None:
                if not held.desired:
                    self._warn_once(f"launch {uid!r} skipped: a process-local model has the uid")
                continue
            if stored.request.model_name not in self._entries:
                self._warn_once(
                    f"launch {uid!r} skipped: no registration named "
                    f"{stored.request.model_name!r} here"
                )
                continue
            handle = self._new_handle(stored.request, stored.by or RECONCILE)
            handle.desired = True
            adopted.append(handle)
        return adopted

    def _desired_launch(self, name: str) -> StoredLaunch | None:
        """A launch of `name` in the store (by uid or registration name) that is not here yet.

        The store is read (on the event loop: up to its timeout) only while it is up (a failed
        read here or in the poll says it is down; the poll's next answer, that it is back), and
        once a second at most for a name it had nothing for.
        """
        for stored in self._snapshot.launches.values():
            if name in (stored.uid, stored.request.model_name):
                return stored
        if not self._store_up or self._misses.missed(name):
            return None
        try:
            found = self.desired.launch(name)  # the poll may not have seen it yet
        except StoreUnavailable as exc:
            self._store_down(exc)
            found = None
        if found is None:
            self._misses.add(name)
        elif self._wake is not None:
            loop, wake = self._wake
            loop.call_soon_threadsafe(wake.set)
        return found

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        logger.warning(message)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._problem(message)

    def _store_reached(self, up: bool) -> None:
        self._store_up = up
        self.metrics.registry_store_up.set(1 if up else 0)

    def _store_down(self, exc: StoreUnavailable) -> None:
        """Requests stop reading the store; at most one log line a minute while it is down."""
        self._store_reached(False)
        now = time.monotonic()
        if now - self._store_down_logged >= 60:
            self._store_down_logged = now
            logger.warning("%s; serving what runs here until it is back", exc.message)

    # Reading and leasing -----------------------------------------------------------------

    def handles(self) -> list[ModelHandle]:
        return list(self._handles.values())

    def pending(self) -> list[StoredLaunch]:
        """Launches the desired state holds that this process has not started yet."""
        return [s for uid, s in self._snapshot.launches.items() if uid not in self._handles]

    def readiness(self, name: str) -> ModelHandle:
        """The handle of `name` if it is ready here; NotReady (503) or ModelNotFound (404)."""
        with self.lease(name) as handle:
            return handle

    def handle(self, uid: str) -> ModelHandle:
        handle = self._handles.get(uid)
        if handle is None:
            raise ModelNotFound(f"no model runs as {uid!r}; {self._served_sentence()}")
        return handle

    @contextmanager
    def lease(self, name: str | None) -> Iterator[ModelHandle]:
        """The ready model a request names, held until the request is done."""
        handle = self._find(name)
        if not handle.try_acquire():
            raise self._refusal(handle)
        with handle.leased():
            yield handle

    def _find(self, name: str | None) -> ModelHandle:
        handles = list(self._handles.values())
        if name is None or name in DEFAULT_MODEL_NAMES:
            ready = [h for h in handles if h.state is ModelState.READY]
            if ready:
                return ready[0]
            if any(h.state is ModelState.LOADING for h in handles):
                raise NotReady("models are still loading")
            raise ModelNotFound(f"no model is ready; {self._served_sentence()}")
        found = self._handles.get(name)
        if found is not None:
            return found
        # Clients often send the registration name or the hub id the model came from.
        for handle in handles:
            if handle.state is ModelState.READY and name in (
                handle.registration.model_name,
                handle.engine.model.source,
            ):
                return handle
        if self._desired_launch(name) is not None:
            raise NotReady(f"model {name!r} is launched and still loading on this process")
        raise ModelNotFound(f"model {name!r} is not served here; {self._served_sentence()}")

    def _refusal(self, handle: ModelHandle) -> RerankError:
        if handle.state is ModelState.LOADING:
            return NotReady(f"model {handle.uid!r} is still loading")
        if handle.state is ModelState.DRAINING:
            return ModelNotFound(
                f"model {handle.uid!r} is being terminated; {self._served_sentence()}"
            )
        return ModelNotFound(
            f"model {handle.uid!r} failed to load (GET /v1/models/{handle.uid} says why); "
            + self._served_sentence()
        )

    def _served_sentence(self) -> str:
        names = [h.uid for h in self._handles.values() if h.state is ModelState.READY]
        return "served models: " + (", ".join(repr(n) for n in names) or "none")

    # Shutdown ----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._desired is not None:
            self._desired.close()
        for task in list(self._loading.values()):
            task.cancel()
        self._loader.shutdown(wait=False, cancel_futures=True)
        for handle in list(self._handles.values()):
            if handle.queue is not None:
                await asyncio.to_thread(handle.queue.stop)

    # Metrics and the change log ----------------------------------------------------------

    def _set_state_metric(self, handle: ModelHandle) -> None:
        for state in ModelState:
            self.metrics.model_state.labels(handle.uid, state.value).set(
                1 if handle.state is state else 0
            )

    def _log(self, action: str, name: str, by: str, **details: object) -> None:
        changes.info(
            "registry %s %s by %s",
            action,
            name,
            by,
            extra={"action": action, "model": name, "by": by, **details},
        )


def _reason(exc: BaseException) -> str:
    """The operator-facing reason: a rerankd error's own sentence, else its type and text."""
    if isinstance(exc, RerankError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _set_started(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
