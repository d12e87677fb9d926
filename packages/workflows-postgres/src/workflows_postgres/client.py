"""The process's default stores, configured from ``WORKFLOWS_*`` (found by ``workflows.store``)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Sequence
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


def async_store(settings: Settings | None = None) -> _LazyStore:
    settings = settings or Settings.current()
    loop = asyncio.get_running_loop()
    with _lock:
        store = _async.get(loop)
        if store is not None and _key(store.settings) == _key(settings):
            return store
        _async[loop] = fresh = _LazyStore(settings)
    if store is not None:
        # The configuration changed under a running loop: the old pool must not leak.
        task = loop.create_task(store.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    return fresh


def sync_store(settings: Settings | None = None) -> SyncStore:
    settings = settings or Settings.current()
    with _lock:
        store = _sync.get(_key(settings))
        if store is None:
            store = _sync[_key(settings)] = SyncStore(settings)
        return store


async def reset_async() -> None:
    """Close this loop's pool (tests switch databases between runs)."""
    loop = asyncio.get_running_loop()
    with _lock:
        store = _async.pop(loop, None)
    if store is not None:
        await store.close()


def reset_sync() -> None:
    with _lock:
        stores = list(_sync.values())
        _sync.clear()
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
