"""The models a server serves and their lifecycle: which one a request names, loaded when first
asked for (or at start), unloaded when another needs its room, after its idle time, or on request.

llama-server's router mode, in one process: ``--models-max`` and ``--models-memory-mib`` bound what
is loaded at once; a model that must be loaded waits in a first-come queue (one entry however many
requests want it) until there is room, and the room is made by unloading the least recently used
model that no request holds. Every request holds the models it picked until its response is sent
(:class:`HoldModels`), so unloading never cuts a request: a model is only unloaded while nothing
holds it. Loading and unloading run in worker threads; the event loop keeps serving the models
that are loaded, and a request for one of them pays one dictionary look-up. All the bookkeeping
runs on the event loop, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .engine import Engine
from .engine_stats import Stats
from .errors import RequestError
from .model_downloads import Downloads
from .model_events import ModelEvents
from .served_model import ServedModel
from .settings import Settings

logger = logging.getLogger("pyllama.server")

LOAD_WAIT_SECONDS = 300.0  # the most a request waits for its model to be loaded before a 503
FAKE_SECONDS = 2.0  # llama-server's LLAMA_SERVER_DEBUG_FAKE_TIMING: its test suite's slow loads and requests
WATCH_SECONDS = 0.25  # how often idle models are checked against their idle time


@dataclasses.dataclass(eq=False)
class PooledModel:
    """One declared model, loaded or not."""

    settings: Settings
    served: ServedModel | None = None
    status: str = "unloaded"  # llama-server's: unloaded, loading, loaded, sleeping; and unloading
    holders: int = 0  # requests that hold it or wait for it
    last_used: float = 0.0  # time.monotonic() of the last request's end
    failure: str | None = None  # why its last load failed
    attempts: int = 0  # loads started
    idle_seconds: float | None = None  # unloaded after this long unheld (None: never)
    unload_when_idle: bool = False  # asked to unload (POST /models/unload) while held
    load_asked: bool = False  # asked to load (POST /models/load): it stays queued with no request waiting
    stats: Stats = dataclasses.field(default_factory=Stats)  # kept across loads: /metrics counts since start
    meta: dict[str, Any] | None = None  # what /v1/models says of it, from its last load
    # changed in --models-dir / --models-preset while it ran (GET /models?reload=1): its new settings, or None
    # when it is gone, applied once it is unloaded
    reloaded: bool = False
    successor: Settings | None = None

    @property
    def name(self) -> str:
        return self.settings.model_alias

    @property
    def names(self) -> tuple[str, ...]:
        return self.settings.model_alias, *self.settings.aliases, self.settings.model_id

    @property
    def file_bytes(self) -> int:
        """What it weighs against --models-memory-mib: its files (weights, draft model, projector)."""
        paths = (self.settings.model, self.settings.model_draft, self.settings.mmproj)
        return sum(Path(p).stat().st_size for p in paths if p and Path(p).is_file())

    @property
    def holds_memory(self) -> bool:
        return self.status in ("loading", "loaded", "unloading")


class _Holds:
    """The models one request picked, released when its response is sent."""

    def __init__(self, autoload: bool | None) -> None:
        self.models: list[PooledModel] = []
        self.autoload = autoload  # ?autoload=true|false, llama-server's per-request override


_HOLDS: contextvars.ContextVar[_Holds | None] = contextvars.ContextVar("pyllama_model_holds", default=None)


class ModelPool:
    def __init__(self, settings: list[Settings]) -> None:
        self.all = [PooledModel(entry, idle_seconds=_idle(entry.sleep_idle_seconds)) for entry in settings]
        first = settings[0]  # server-wide options come from the first entry
        self.router = first.router
        self.models_max = first.models_max
        self.memory_budget = first.models_memory_mib << 20
        self.autoload = first.models_autoload
        self.max_waiting = first.max_queue
        self.reread = first.reread  # router mode: the models the flags and files declare now
        # set by llama-server's test suite: in router mode each load, and each request while it holds its model,
        # takes FAKE_SECONDS more, so its queueing tests see busy models (llama-server's server_models does this)
        self.fake_timing = self.router and bool(os.environ.get("LLAMA_SERVER_DEBUG_FAKE_TIMING"))
        self._by_name: dict[str, PooledModel] = {}
        self._index()
        self._queue: list[PooledModel] = []  # models waiting to be loaded, first come first served
        self._changed = asyncio.Event()  # set (and replaced) whenever a status changes
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references
        self._watcher: asyncio.Task[None] | None = None
        self.events = ModelEvents()  # GET /models/sse
        self.downloads = Downloads(self.events, self.refresh)  # POST /models
        for pooled in self.all:  # before serving, in this thread: a server that answers has them
            if pooled.settings.load_on_startup and self._has_room(pooled):
                self._load_now(pooled)

    # --- picking -----------------------------------------------------------------------------
    @property
    def default(self) -> PooledModel:
        return self.all[0]

    def entry(self, name: str | None) -> PooledModel:
        """The declared model a name means. Without router mode a one-model server answers to any
        name (clients, UIs and LangChain send names of their own), and no name means the first;
        otherwise an unknown name is a 404."""
        if not self.router and (name is None or len(self.all) == 1):
            return self.default
        if name is None:
            raise RequestError(400, "model name is missing from the request", "model")
        try:
            return self._by_name[name]
        except KeyError:
            names = ", ".join(f"'{p.name}'" for p in self.all)
            raise RequestError(404, f"the model '{name}' does not exist; this server has {names}", "model",
                               "model_not_found") from None

    async def pick(self, name: str | None) -> ServedModel:
        """The loaded model a request names, loading it first if need be. The request holds it
        until its response is sent, so it is not unloaded under the request."""
        holds = _HOLDS.get()
        if holds is None:
            raise RuntimeError("ModelPool.pick runs inside a request, under HoldModels")
        pooled = self.entry(name)
        pooled.holders += 1
        holds.models.append(pooled)
        if pooled.status == "loaded" and not self.fake_timing:
            return pooled.served
        if pooled.status != "loaded":
            autoload = self.autoload if holds.autoload is None else holds.autoload
            if not autoload and pooled.status != "loading":
                raise RequestError(400, f"the model '{pooled.name}' is not loaded, and this server loads models "
                                        "only when asked (--no-models-autoload): POST /models/load first", "model",
                                   "model_not_loaded")
            await self._wait_loaded(pooled)
        if self.fake_timing:
            await asyncio.sleep(FAKE_SECONDS)  # held meanwhile: busy
        return pooled.served

    async def _wait_loaded(self, pooled: PooledModel) -> ServedModel:
        waiting = sum(p.holders for p in self._queue)
        if pooled not in self._queue and waiting >= self.max_waiting:
            raise RequestError(503, f"{waiting} requests already wait for models to load; retry shortly",
                               headers={"Retry-After": "1"})
        attempts = pooled.attempts - (pooled.status == "loading")  # a load under way counts as this request's
        deadline = time.monotonic() + LOAD_WAIT_SECONDS
        while pooled.status != "loaded":
            if pooled.attempts > attempts and pooled.status != "loading" and pooled.failure is not None:
                raise RequestError(500, f"the model '{pooled.name}' could not be loaded: {pooled.failure}", "model",
                                   "model_load_failed")
            if pooled not in self._queue and pooled.status != "loading":
                self._queue.append(pooled)
                self._schedule()
                continue
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise RequestError(503, f"the model '{pooled.name}' was not loaded within {LOAD_WAIT_SECONDS:g} s "
                                        "(other models are busy); retry later", "model",
                                   headers={"Retry-After": "5"}) from None
        return pooled.served

    def release(self, models: list[PooledModel]) -> None:
        now = time.monotonic()
        for pooled in models:
            pooled.holders -= 1
            pooled.last_used = now
        self._schedule()

    # --- requests from outside (/models/load, /models/unload, Ollama's keep_alive) ------------
    def load(self, name: str) -> PooledModel:
        """Start loading a model without waiting for it (POST /models/load); its status says when
        it is loaded or why it failed."""
        pooled = self.entry(name)
        if pooled.status in ("loaded", "loading"):
            raise RequestError(400, f"the model '{pooled.name}' is already {pooled.status}", "model")
        pooled.unload_when_idle, pooled.load_asked = False, True
        if pooled not in self._queue:
            self._queue.append(pooled)
        self._schedule()
        return pooled

    def unload(self, name: str) -> PooledModel:
        """Unload a model as soon as no request holds it (POST /models/unload); requests that come
        meanwhile are still served, and one after it loads it again."""
        pooled = self.entry(name)
        if pooled in self._queue and pooled.status != "loading":
            self._queue.remove(pooled)  # not loaded yet: it need not be
            self._notify()
            return pooled
        if pooled.status == "sleeping":  # unloaded already; it only changes its name
            pooled.status = "unloaded"
            self._notify(pooled)
            return pooled
        if pooled.status not in ("loaded", "loading"):
            raise RequestError(400, f"the model '{pooled.name}' is not loaded", "model")
        pooled.unload_when_idle = True
        self._schedule()
        return pooled

    def reload(self, entries: list[Settings]) -> None:
        """The models --models-dir and --models-preset declare now (``reread``, GET /models?reload=1),
        taken as llama-server does: a model that runs and was changed or removed there is unloaded
        once no request holds it, and then changed or removed; one that does not run is added,
        changed or removed now. New models are listed, not loaded."""
        fresh = {entry.model_alias: entry for entry in entries}
        for pooled in list(self.all):
            entry = fresh.pop(pooled.name, None)
            if entry is not None:
                entry = dataclasses.replace(entry, started=pooled.settings.started)
                if _listing_only(entry) == _listing_only(pooled.settings):  # nothing a loaded model depends on
                    pooled.settings = entry
                    continue
            pooled.reloaded, pooled.successor = True, entry
            if pooled.status in ("unloaded", "sleeping") and pooled not in self._queue:
                self._apply_reload(pooled)
            else:
                pooled.unload_when_idle = True
        self.all += [PooledModel(entry, idle_seconds=_idle(entry.sleep_idle_seconds)) for entry in fresh.values()]
        self._index()
        self._schedule()

    async def refresh(self) -> None:
        """Read the declared models again (``reread``) and take them (``reload``); ValueError if
        the files are wrong now, and then nothing changes."""
        if self.reread is None:
            return
        self.reload(await asyncio.to_thread(self.reread))
        self.events.publish("*", "models_reload")

    async def until_unloaded(self, pooled: PooledModel) -> None:
        """Wait until ``pooled`` holds no memory (after an unload asked for)."""
        while pooled.holds_memory or pooled in self._queue:
            await self._changed.wait()

    def _apply_reload(self, pooled: PooledModel) -> None:
        if pooled.successor is None:
            self.all.remove(pooled)
        else:
            pooled.settings, pooled.idle_seconds = pooled.successor, _idle(pooled.successor.sleep_idle_seconds)
            pooled.failure, pooled.meta = None, None
        pooled.reloaded, pooled.successor = False, None
        self._index()

    def _index(self) -> None:
        self._by_name = {}
        for pooled in self.all:
            for name in pooled.names:
                self._by_name.setdefault(name, pooled)

    def keep_alive(self, pooled: PooledModel, seconds: float | None) -> None:
        """How long the model stays loaded once no request holds it (None: until it is unloaded
        for room or on request; 0: unloaded as soon as its requests are done)."""
        pooled.idle_seconds = seconds
        self._schedule()

    # --- state ---------------------------------------------------------------------------------
    def loaded(self) -> list[PooledModel]:
        return [p for p in self.all if p.status == "loaded"]

    def engines(self) -> list[Engine]:
        return [p.served.engine for p in self.all if p.served is not None]

    def sleeping(self) -> bool:
        """Every model idle-unloaded (llama-server's ``is_sleeping``)."""
        return all(p.status == "sleeping" for p in self.all)

    def status(self, pooled: PooledModel) -> dict[str, Any]:
        """llama-server's per-model ``status`` object in GET /models."""
        shown: dict[str, Any] = {"value": "loaded" if pooled.status == "unloading" else pooled.status}
        if pooled.failure is not None and pooled.status == "unloaded":
            shown.update(failed=True, exit_code=1, error=pooled.failure)
        return shown

    # --- loading and unloading -------------------------------------------------------------------
    def _has_room(self, pooled: PooledModel) -> bool:
        held = [p for p in self.all if p.holds_memory and p is not pooled]
        if self.models_max > 0 and len(held) >= self.models_max:
            return False
        if self.memory_budget > 0 and held:  # one model alone loads even past the budget
            return sum(p.file_bytes for p in held) + pooled.file_bytes <= self.memory_budget
        return True

    def _schedule(self) -> None:
        """Start whatever can start now: loads for the waiting models in arrival order, making
        room by unloading the least recently used unheld model; and the unloads asked for."""
        for pooled in self.all:
            if pooled.status == "loaded" and pooled.holders == 0 and (pooled.unload_when_idle
                                                                       or pooled.idle_seconds == 0):
                self._start_unload(pooled, "unloaded" if pooled.unload_when_idle else "sleeping")
        for pooled in list(self._queue):
            if pooled.status in ("loading", "unloading"):
                continue  # its turn comes when that is done
            if pooled.status == "loaded" or (pooled.holders == 0 and not pooled.load_asked):
                self._queue.remove(pooled)  # loaded, or nobody waits for it anymore
                continue
            if self._has_room(pooled):
                self._start_load(pooled)
                continue
            idle = [p for p in self.all if p.status == "loaded" and p.holders == 0]
            if idle and not any(p.status == "unloading" for p in self.all):  # one room made at a time
                self._start_unload(min(idle, key=lambda p: p.last_used), "unloaded")
            break  # first come first served: later models wait for this one's room

    def _start(self, step: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self, pooled: PooledModel | None = None) -> None:
        """Wake whoever waits on a status; ``pooled``'s new one is an event for /models/sse too."""
        self._changed.set()
        self._changed = asyncio.Event()
        if pooled is not None and pooled.status != "unloading":  # llama-server shows it loaded until it is not
            shown = self.status(pooled)
            data = {"status": shown["value"], **({"exit_code": shown.get("exit_code", 0)}
                                                 if pooled.status == "unloaded" else {})}
            self.events.publish(pooled.name, "status_change", data)

    def _start_load(self, pooled: PooledModel) -> None:
        pooled.status, pooled.attempts, pooled.load_asked = "loading", pooled.attempts + 1, False  # counts now
        self._notify(pooled)
        self._start(self._load(pooled))

    async def _load(self, pooled: PooledModel) -> None:
        started = time.perf_counter()
        try:
            if self.fake_timing:
                await asyncio.sleep(FAKE_SECONDS)
            served = await asyncio.to_thread(ServedModel, pooled.settings)
        except Exception as exc:  # noqa: BLE001 - whatever a load raises fails that model, never the server
            pooled.status, pooled.failure = "unloaded", str(exc) or type(exc).__name__
            logger.warning("model %s: cannot load %s: %s", pooled.name, pooled.settings.model, pooled.failure)
        else:
            self._loaded(pooled, served)
            logger.info("model %s: loaded in %.2f s", pooled.name, time.perf_counter() - started)
        if pooled in self._queue:
            self._queue.remove(pooled)
        self._notify(pooled)
        self._schedule()

    def _load_now(self, pooled: PooledModel) -> None:
        """A load at start, before the event loop runs; a failure is recorded, not raised."""
        pooled.attempts += 1
        try:
            self._loaded(pooled, ServedModel(pooled.settings))
        except Exception as exc:  # noqa: BLE001 - as _load: the others still serve
            pooled.failure = str(exc) or type(exc).__name__

    def _loaded(self, pooled: PooledModel, served: ServedModel) -> None:
        served.engine.stats = pooled.stats  # before any job: its counters go on from the last load
        model = served.model
        pooled.served, pooled.status, pooled.failure = served, "loaded", None
        pooled.last_used = time.monotonic()
        pooled.meta = {"n_vocab": served.vocab.n_tokens, "n_ctx_train": model.n_ctx_train, "n_embd": model.n_embd,
                       "n_params": model.n_params, "size": model.size}

    def _start_unload(self, pooled: PooledModel, status: str) -> None:
        """Only ever for a model no request holds: its engine has nothing left to run."""
        pooled.status = "unloading"  # from now on a request for it waits for it to load again
        self._notify()
        self._start(self._unload(pooled, status))

    async def _unload(self, pooled: PooledModel, status: str) -> None:
        try:
            await asyncio.to_thread(pooled.served.close)
        finally:  # a close that failed still leaves the model unusable: it counts as unloaded
            pooled.served, pooled.status, pooled.unload_when_idle = None, status, False
            if pooled.reloaded:
                self._apply_reload(pooled)
        logger.info("model %s: %s", pooled.name, status)
        self._notify(pooled)
        self._schedule()

    # --- idle time --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching idle times (on the event loop, when the app starts)."""
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            now = time.monotonic()
            for pooled in self.all:
                if (pooled.status == "loaded" and pooled.holders == 0 and pooled.idle_seconds is not None
                        and now - pooled.last_used >= pooled.idle_seconds):
                    self._start_unload(pooled, "sleeping")

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for pooled in self.all:
            if pooled.served is not None:
                pooled.served.close()
                pooled.served, pooled.status = None, "unloaded"


def _listing_only(settings: Settings) -> Settings:
    """The settings but what only GET /models shows (a model changed only there need not reload)."""
    return dataclasses.replace(settings, hidden=False, source="")


def _idle(seconds: float) -> float | None:
    return None if seconds < 0 else seconds


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class HoldModels:
    """ASGI middleware: the models a request picks stay held until its response is sent (a stream
    too), or until the client leaves."""

    def __init__(self, app: ASGIApp, pool: ModelPool) -> None:
        self.app, self.pool = app, pool

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("autoload")
        holds = _Holds(asked[-1] in ("true", "1") if asked else None)
        token = _HOLDS.set(holds)
        try:
            await self.app(scope, receive, send)
        finally:
            _HOLDS.reset(token)
            self.pool.release(holds.models)
