"""`ModelRegistry`: the registrations a server knows and the models it runs.

Registrations come from four places, in this order (a later one may not take a name an
earlier one holds): the built-in model, the operator's `--registrations-file`, the data
directory's persisted file, and the API. Models are launched from a registration under a uid
(the name clients send as `model`), loaded in the background on one loader thread, and
terminated by draining their leases first. The start-up `--model` list goes through the same
launch path, synchronously, before the server reports ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from rerankd.registry.handle import ModelHandle, ModelState, Placement
from rerankd.registry.loader import close_engines, give_memory_back, load_replicas
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
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerankd-loader")
        self._loading: dict[ModelHandle, asyncio.Future[None]] = {}
        self.calibrations: list[Calibration] = []  # --calibration files, read at start-up

    # Start-up ----------------------------------------------------------------------------

    def start(self) -> None:
        """Read the registrations, then load the start-up models (blocking; run in a thread)."""
        self._add(builtin_registration(), "builtin")
        if self.settings.registrations_file is not None:
            for registration in read_registrations_file(
                self.settings.registrations_file, self.problems
            ):
                self._add(registration, "file")
        for registration in self.store.load():
            self._add(registration, "api", persisted=True)
        self.problems.extend(self.store.problems)

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
        unmatched_calibrations(
            self.calibrations, [identity_of(h.engine.model) for h in self._handles.values()]
        )

    def _with_server_defaults(self, registration: Registration) -> Registration:
        """`--family` / `--instruction` apply to start-up models that do not set their own."""
        defaults = {
            "family": registration.family or self.settings.family,
            "instruction": registration.instruction or self.settings.instruction,
        }
        return registration.model_copy(update=defaults)

    def _startup_launch(self, text: str) -> LaunchRequest:
        """`--model NAME` launches a registration; any other spec registers itself first."""
        spec = ModelSpec.parse(
            text, family=self.settings.family, instruction=self.settings.instruction
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

    def register(
        self, registration: Registration, *, persist: bool, replace: bool, by: str
    ) -> Entry:
        name = registration.model_name
        old = self._entries.get(name)
        if old is not None:
            if not replace:
                raise Conflict(
                    f"a model named {name!r} is already registered; unregister it first or "
                    "ask for replace"
                )
            if old.origin in ("builtin", "file"):
                raise Conflict(f"{name!r} comes from the {old.origin} registrations and is fixed")
        entry = Entry(registration, "api", persisted=persist)
        self._entries[name] = entry
        if persist or (old is not None and old.persisted):
            self._save()
        self._log("register", name, by, persist=persist, replaced=old is not None)
        return entry

    def unregister(self, name: str, *, by: str) -> Entry:
        entry = self.entry(name)
        if entry.origin in ("builtin", "file"):
            raise Conflict(f"{name!r} comes from the {entry.origin} registrations and is fixed")
        running = [h.uid for h in self._handles.values() if h.registration.model_name == name]
        if running:
            raise Conflict(
                f"{name!r} is running as {', '.join(map(repr, running))}; terminate it first"
            )
        del self._entries[name]
        if entry.persisted:
            self._save()
        self.metrics.remove_registration(name)
        self._log("unregister", name, by)
        return entry

    def _save(self) -> None:
        self.store.save([e.registration for e in self._entries.values() if e.persisted])

    # Launch and terminate ----------------------------------------------------------------

    async def launch(self, request: LaunchRequest, *, by: str, wait: bool) -> ModelHandle:
        """Start loading a registered model in the background; with `wait`, until it is done."""
        self.entry(request.model_name)  # 404 before anything else
        uid = request.model_uid or self._free_uid(request.model_name)
        old = self._handles.get(uid)
        if old is not None:
            if old.state is not ModelState.FAILED:
                raise Conflict(f"a model runs as {uid!r} already ({old.state.value})")
            self._remove(old)  # a failed launch is replaced by a new one
        request = request.model_copy(update={"model_uid": uid})
        handle = self._new_handle(request, by)
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(loop.run_in_executor(self._loader, self._load, handle))
        self._loading[handle] = task
        task.add_done_callback(lambda _: self._loading.pop(handle, None))
        if wait:
            await asyncio.shield(task)
            if handle.state is ModelState.FAILED:
                raise LoadFailed(f"model {uid!r} failed to load: {handle.error}")
        return handle

    async def terminate(self, uid: str, *, by: str) -> dict[str, Any]:
        """Refuse new requests, let the leased ones finish, then free the model."""
        handle = self.handle(uid)
        previous = handle.state
        if previous is ModelState.DRAINING:
            raise Conflict(f"model {uid!r} is being terminated already")
        started = time.perf_counter()
        in_flight = handle.in_flight
        with handle._lock:
            handle.state = ModelState.DRAINING
        self._set_state_metric(handle)
        drained = await handle.wait_drained(self.settings.request_timeout + 5)
        loading = self._loading.get(handle)
        if loading is not None:
            # The loader thread finishes this load first; it sees `draining`, so never serves it.
            await asyncio.gather(asyncio.shield(loading), return_exceptions=True)
        await asyncio.to_thread(self._free, handle)
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

    def _free_uid(self, name: str) -> str:
        if name not in self._handles:
            return name
        return f"{name}-{uuid.uuid4().hex[:8]}"

    # Reading and leasing -----------------------------------------------------------------

    def handles(self) -> list[ModelHandle]:
        return list(self._handles.values())

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
