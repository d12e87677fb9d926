"""This package as core's ``workflows.store.Backend`` (the ``workflows.stores`` entry point)."""

from __future__ import annotations

from workflows.config import Settings
from workflows.store import AsyncStore, ClientStores, SyncStore, WorkerStore


# On every enqueue: `import a.b as c` finds the loaded module in C, where `from a import b`
# calls importlib's Python code.
def async_store(settings: Settings | None = None) -> AsyncStore:
    import workflows_postgres.client as client

    return client.async_store(settings)


def sync_store(settings: Settings | None = None) -> SyncStore:
    import workflows_postgres.client as client

    return client.sync_store(settings)


def client_stores(settings: Settings) -> ClientStores:
    from workflows_postgres import client

    return client.ClientStores(settings)


async def worker_store(
    settings: Settings, *, dsn: str | None = None, max_size: int = 10
) -> WorkerStore:
    from workflows_postgres.pooler import require_session
    from workflows_postgres.store import PostgresStore

    require_session(settings, "a worker", "LISTEN, session advisory locks")
    return await PostgresStore.connect(settings, dsn=dsn, min_size=2, max_size=max_size)


def migrate(settings: Settings) -> list[int]:
    from workflows_postgres.connect import resolve_dsn, sync_errors
    from workflows_postgres.migrate import apply_migrations
    from workflows_postgres.pooler import require_session

    # Through transaction pooling its lock would be taken on one server session and released
    # on another, and held there until that session ends: the next migrate would wait forever.
    require_session(settings, "migrate", "a session advisory lock")
    dsn = resolve_dsn(settings)
    with sync_errors(dsn, f"cannot migrate schema {settings.schema!r}"):
        return apply_migrations(dsn, settings.schema)
