"""The process's default stores, configured from ``WORKFLOWS_*`` (found by ``workflows.store``)."""

from __future__ import annotations

import asyncio
import threading
import weakref

from workflows.config import Settings
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

    def __getattr__(self, name: str) -> object:
        async def call(*args: object, **kwargs: object) -> object:
            store = await self.get()
            return await getattr(store, name)(*args, **kwargs)

        return call


def async_store() -> _LazyStore:
    settings = Settings.from_env()
    loop = asyncio.get_running_loop()
    with _lock:
        store = _async.get(loop)
        if store is None or _key(store.settings) != _key(settings):
            store = _async[loop] = _LazyStore(settings)
        return store


def sync_store() -> SyncStore:
    settings = Settings.from_env()
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
    if store is not None and store._store is not None:
        await store._store.close()


def reset_sync() -> None:
    with _lock:
        stores = list(_sync.values())
        _sync.clear()
    for store in stores:
        store.close()
