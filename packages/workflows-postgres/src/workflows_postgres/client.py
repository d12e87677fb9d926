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
