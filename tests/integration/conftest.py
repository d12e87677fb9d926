"""Fixtures for tests that run real workers against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.integration import jobs_app
from workflows.config import Settings
from workflows_postgres import client
from workflows_postgres.store import PostgresStore
from workflows_worker.worker import Worker


@pytest.fixture(autouse=True)
def _fast_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Short backoff and heartbeats keep retry and failover tests quick; poll stays at its
    # default so tests that need a quick pickup prove the LISTEN/NOTIFY path.
    monkeypatch.setenv("WORKFLOWS_RETRY_BACKOFF", "0.02")
    monkeypatch.setenv("WORKFLOWS_RETRY_BACKOFF_MAX", "0.1")
    monkeypatch.setenv("WORKFLOWS_WORKER_POLL_INTERVAL", "0.2")
    jobs_app.reset()
    yield
    client.reset_sync()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.connect(Settings.from_env())
    yield s
    await s.close()
    await client.reset_async()


@pytest.fixture
async def small_store(database_url: str) -> AsyncIterator[PostgresStore]:
    """A store whose pool holds at most two connections."""
    s = await PostgresStore.connect(Settings.from_env(), min_size=1, max_size=2)
    yield s
    await s.close()


StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(database_url: str) -> AsyncIterator[StartWorker]:
    """Start in-process workers (real claim loop, real database); stopped at teardown."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(*queues: str, **kwargs: Any) -> Worker:
        # settings=: a worker of another database or schema than the environment's.
        kwargs.setdefault("settings", Settings.from_env())
        worker = Worker(list(queues), **kwargs)
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        # Wait until it is registered and listening, so a test's first enqueue is heard.
        for _ in range(500):
            if worker.healthy() or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    for _, task in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 35)
    await client.reset_async()


async def wait_status(
    store: PostgresStore, execution_id: str, statuses: set[str], timeout: float = 20
) -> dict[str, Any]:
    """Poll until the execution reaches one of ``statuses``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        status = await store.get_status(execution_id)
        if status["status"] in statuses:
            return status
        if loop.time() > end:
            raise AssertionError(f"{execution_id} stuck at {status['status']}, wanted {statuses}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def executions_locked(dsn: str, mode: str = "EXCLUSIVE") -> AsyncIterator[Any]:
    """``executions`` locked against writes by another connection (yielded) until the block
    ends: a statement that writes it waits meanwhile (``ACCESS EXCLUSIVE``: one that reads it
    too)."""
    import asyncpg

    blocker = await asyncpg.connect(dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(f"LOCK TABLE workflows.executions IN {mode} MODE")
        yield blocker
        await tx.rollback()
    finally:
        # After an error in the block, closing ends the transaction too.
        await blocker.close()


async def waiting_on_a_lock(conn: Any) -> bool:
    """Whether a session of this database waits for a lock now (``conn``: another one)."""
    n = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"
    )
    return bool(n)


async def until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll ``check`` (plain or async) until it returns something true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
