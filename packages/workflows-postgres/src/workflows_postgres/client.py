"""The process's default stores, configured from ``WORKFLOWS_*`` (found by ``workflows.store``)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Sequence
from typing import Any

from workflows.config import Settings
from workflows.store import EnqueueRequest
from workflows_postgres.store import PostgresStore
from workflows_postgres.sync import SyncStore

_lock = threading.Lock()
_sync: dict[tuple[str | None, str], SyncStore] = {}
# asyncpg pools belong to one event loop: one lazily connected store per loop.
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LazyStore] = (
    weakref.WeakKeyDictionary()
)


def _key(settings: Settings) -> tuple[str | None, str]:
    return settings.database_url, settings.schema


class _LazyStore:
    """Connects on first use so that ``async_store()`` itself stays synchronous."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: PostgresStore | None = None
        self._connecting: asyncio.Lock | None = None

    async def get(self) -> PostgresStore:
        if self._store is None:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._store is None:
                    self._store = await PostgresStore.connect(self.settings)
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    def terminate(self) -> None:
        """End the pool's connections at once, without its event loop (which has stopped)."""
        store, self._store = self._store, None
        if store is not None:
            store.terminate()

    # workflows.store.AsyncStore, spelled out: these sit on every producer's hot path.
    async def enqueue(self, request: EnqueueRequest, conn: Any = None) -> str:
        return await (self._store or await self.get()).enqueue(request, conn)

    def enqueue_one(self, options: EnqueueRequest, payload: str) -> Awaitable[str]:
        # The store's own coroutine when connected: no frame of this one's in between.
        store = self._store
        if store is not None:
            return store.enqueue_one(options, payload)
        return self._enqueue_one(options, payload)

    async def _enqueue_one(self, options: EnqueueRequest, payload: str) -> str:
        return await (await self.get()).enqueue_one(options, payload)

    async def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]:
        return await (self._store or await self.get()).enqueue_many(options, payloads)

    async def send_signal(self, workflow_id: str, name: str, payload: str) -> None:
        await (self._store or await self.get()).send_signal(workflow_id, name, payload)

    async def get_status(self, execution_id: str) -> dict[str, Any]:
        return await (self._store or await self.get()).get_status(execution_id)

    async def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]:
        return await (self._store or await self.get()).wait_finished(execution_id, timeout)

    async def cancel(self, execution_id: str) -> str:
        return await (self._store or await self.get()).cancel(execution_id)

    async def control(self, statement: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return await (self._store or await self.get()).control(statement, args)


# Pools of replaced stores, closing in the background (kept so the tasks are not collected).
_closing: set[asyncio.Task[None]] = set()


# The last answer of async_store(): its loop and store (weakly: an ended loop's pool goes
# with it, as from _async) and the Settings asked with. Producers ask on every enqueue, mostly
# from one loop with one Settings (Settings.current() keeps its object while the
# configuration stays): the lock and the weak mapping's lookup were a tenth of an enqueue's
# own work. Emptied wherever _async loses a store.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], Settings, weakref.ref[_LazyStore]] | None = (
    None
)


def async_store(settings: Settings | None = None) -> _LazyStore:
    global _last
    settings = settings or Settings.current()
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last[1] is settings and last[0]() is loop:
        found = last[2]()
        if found is not None:
            return found
    with _lock:
        store = _async.get(loop)
        if store is not None and _key(store.settings) == _key(settings):
            _last = (weakref.ref(loop), settings, weakref.ref(store))
            return store
        _async[loop] = fresh = _LazyStore(settings)
        _last = (weakref.ref(loop), settings, weakref.ref(fresh))
    if store is not None:
        # The configuration changed under a running loop: the old pool must not leak.
        task = loop.create_task(store.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    return fresh


# The last answer of sync_store() and the Settings asked with (as _last for async_store()).
_last_sync: tuple[Settings, SyncStore] | None = None


def sync_store(settings: Settings | None = None) -> SyncStore:
    global _last_sync
    settings = settings or Settings.current()
    last = _last_sync
    if last is not None and last[0] is settings:
        return last[1]
    with _lock:
        store = _sync.get(_key(settings))
        if store is None:
            store = _sync[_key(settings)] = SyncStore(settings)
        _last_sync = (settings, store)
        return store


async def reset_async() -> None:
    """Close this loop's pool (tests switch databases between runs)."""
    global _last
    loop = asyncio.get_running_loop()
    with _lock:
        store = _async.pop(loop, None)
        _last = None
    if store is not None:
        await store.close()


def reset_sync() -> None:
    global _last_sync
    with _lock:
        stores = list(_sync.values())
        _sync.clear()
        _last_sync = None
    for store in stores:
        store.close_results()
        store.close()


class ClientStores:
    """The stores of one ``workflows.Client``: its own pools, apart from the process's default
    ones above, so that clients of other databases or schemas never replace each other's."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LazyStore] = (
            weakref.WeakKeyDictionary()
        )
        self._sync: SyncStore | None = None

    def async_store(self) -> _LazyStore:
        loop = asyncio.get_running_loop()
        store = self._async.get(loop)
        if store is None:
            with self._lock:
                store = self._async.get(loop)
                if store is None:
                    store = self._async[loop] = _LazyStore(self.settings)
        return store

    def sync_store(self) -> SyncStore:
        store = self._sync
        if store is None:
            with self._lock:
                if self._sync is None:
                    self._sync = SyncStore(self.settings)
                store = self._sync
        return store

    def _take(self) -> tuple[list[tuple[asyncio.AbstractEventLoop, _LazyStore]], SyncStore | None]:
        with self._lock:
            stores = list(self._async.items())
            self._async.clear()
            sync, self._sync = self._sync, None
        return stores, sync

    async def aclose(self) -> None:
        stores, sync = self._take()
        here = asyncio.get_running_loop()
        for loop, store in stores:
            if loop is here:
                await store.close()
            else:
                _close_elsewhere(loop, store)
        if sync is not None:
            # Closing tells the results thread to stop; no waiting on the network in the loop.
            await asyncio.to_thread(_close_sync, sync)

    def close(self) -> None:
        stores, sync = self._take()
        for loop, store in stores:
            _close_elsewhere(loop, store)
        if sync is not None:
            _close_sync(sync)


def _close_sync(store: SyncStore) -> None:
    store.close_results()
    store.close_all()


def _close_elsewhere(loop: asyncio.AbstractEventLoop, store: _LazyStore) -> None:
    """Close ``store``, whose pool belongs to ``loop``, from code not awaiting in that loop."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        # close() from synchronous code inside the loop: the pool closes once this returns.
        task = loop.create_task(store.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(store.close(), loop)
    else:
        # A loop that no longer runs can never await the close: end the connections now.
        store.terminate()
