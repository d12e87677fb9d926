"""Through a real PgBouncer: producers in transaction pooling, workers in session pooling.

The transaction-mode PgBouncer has two server connections per database: every producer's
connections (the asyncpg pool, a psycopg connection per thread, the caller's own) share them,
so a statement prepared on one server session is missing on the other, and a session setting
would serve whoever comes next. The workers that complete the work connect directly, or
through the session-mode PgBouncer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest

import workflows
from currant.testing.server import with_dbname
from tests.integration import jobs_app
from tests.integration import workflows_app as app
from tests.integration.pgbouncer import pgbouncer
from workflows.config import Settings
from workflows.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    ExecutionNotFoundError,
)
from workflows_postgres import client
from workflows_postgres.store import PostgresStore
from workflows_worker.worker import Worker

# Small on purpose: several clients per server connection.
TRANSACTION_POOL = 2
# A worker holds its sessions for life (a pool, the claim, the listener, the heartbeat).
SESSION_POOL = 40


@pytest.fixture(scope="session")
def transaction_pooler(pg_server: str) -> Iterator[str]:
    with pgbouncer(pg_server, pool_mode="transaction", pool_size=TRANSACTION_POOL) as url:
        yield url


@pytest.fixture(scope="session")
def session_pooler(pg_server: str) -> Iterator[str]:
    with pgbouncer(pg_server, pool_mode="session", pool_size=SESSION_POOL) as url:
        yield url


def _same_database(pooler_url: str, database_url: str) -> str:
    return with_dbname(pooler_url, urlsplit(database_url).path.lstrip("/"))


@pytest.fixture
async def through_transaction(
    database_url: str, transaction_pooler: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """This test's database through transaction pooling, as the producers' configuration."""
    url = _same_database(transaction_pooler, database_url)
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", url)
    monkeypatch.setenv("WORKFLOWS_POOLER", "transaction")
    yield url
    await client.reset_async()
    client.reset_sync()


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, *queues: str) -> AsyncIterator[Worker]:
    worker = Worker(list(queues), settings=settings, concurrency=4)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(1000):
            if worker.healthy() or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 35)


def direct(database_url: str) -> Settings:
    """A worker's settings: PostgreSQL itself, no pooler."""
    return dataclasses.replace(Settings.from_env(), database_url=database_url, pooler="none")


async def test_the_default_pool_is_refused_by_a_transaction_pooler(
    database_url: str, transaction_pooler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What WORKFLOWS_POOLER is for: the pool's startup parameters are refused.
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", _same_database(transaction_pooler, database_url))
    try:
        with pytest.raises(DatabaseUnavailableError, match="unsupported startup parameter"):
            await jobs_app.record.queue("refused")
    finally:
        await client.reset_async()


async def test_async_producers_through_transaction_pooling(
    database_url: str, through_transaction: str
) -> None:
    async with running_worker(direct(database_url), "work", "orders"):
        job_id = await jobs_app.record.queue("one")
        assert await workflows.get_result(job_id, timeout=30) == "one"

        many = await jobs_app.record.queue_many([((f"m{k}",), {}) for k in range(5)])
        assert [await workflows.get_result(i, timeout=30) for i in many] == [
            f"m{k}" for k in range(5)
        ]

        workflow_id = await app.approval.queue("o-1")
        await _until_waiting(workflow_id)
        await workflows.send_signal(workflow_id, "approved", {"approved": True})
        result = await workflows.get_result(workflow_id, timeout=30)
        assert result["status"] == "approved"

        # The caller's own asyncpg connection through the pooler (its cache off, as documented):
        # the job exists only if that transaction commits.
        conn = await asyncpg.connect(through_transaction, statement_cache_size=0)
        try:
            with contextlib.suppress(_Rollback):
                async with conn.transaction():
                    dropped = await jobs_app.record.options(conn=conn).queue("rolled back")
                    raise _Rollback
            async with conn.transaction():
                kept = await jobs_app.record.options(conn=conn).queue("committed")
        finally:
            await conn.close()
        assert await workflows.get_result(kept, timeout=30) == "committed"
        with pytest.raises(ExecutionNotFoundError):
            await workflows.get_status(dropped)


class _Rollback(Exception):
    pass


async def _until_waiting(workflow_id: str) -> None:
    """Until the workflow ran and waits (a signal sent before its wait is kept all the same)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while (await workflows.get_status(workflow_id))["status"] != "waiting":
        assert loop.time() < end, "the workflow never ran"
        await asyncio.sleep(0.02)


def _sync_producer(url: str, tag: str, count: int) -> list[str]:
    """queue_sync, transactional enqueue on the caller's connection, get_result_sync."""
    # Waited for first, while the others still work: the results watcher polls its own
    # connection more than five times (psycopg's threshold to prepare a statement).
    later = jobs_app.record.options(delay=1.5).queue_sync(f"{tag}-later")
    ids = [jobs_app.record.queue_sync(f"{tag}-{k}") for k in range(count)]
    # The caller's connection, its statements prepared past psycopg's threshold of five runs
    # unless told not to: more runs than that, each in a transaction of its own.
    with psycopg.connect(url) as conn:
        for k in range(count):
            with conn.transaction():
                ids.append(jobs_app.record.options(conn=conn).queue_sync(f"{tag}-tx{k}"))
        with conn.transaction():
            rolled_back = jobs_app.record.options(conn=conn).queue_sync(f"{tag}-gone")
            raise psycopg.Rollback()
    with pytest.raises(ExecutionNotFoundError):
        workflows.get_status_sync(rolled_back)
    return [workflows.get_result_sync(i, timeout=60) for i in [later, *ids]]


async def _async_producer(tag: str, count: int) -> list[str]:
    ids = [await jobs_app.record.queue(f"{tag}-{k}") for k in range(count)]
    return [await workflows.get_result(i, timeout=60) for i in ids]


async def test_single_enqueues_get_their_own_connection_through_the_pooler_too(
    through_transaction: str,
) -> None:
    # One enqueue after another goes on a connection of the store's own (not the pool's). It
    # was opened with the startup parameters the pooler refuses, so every enqueue fell back
    # to the pool and another connection was tried each second.
    for k in range(3):
        await jobs_app.record.queue(f"own-{k}")
    store = await client.async_store().get()
    own = store._producer
    assert own is not None and not own.is_closed()
    # Through transaction pooling it keeps no prepared statements the next server lacks.
    for k in range(20):
        await jobs_app.record.queue(f"again-{k}")
    assert store._producer is own


async def test_concurrent_producers_share_two_server_connections(
    database_url: str, through_transaction: str, transaction_pooler: str
) -> None:
    count = 8
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def sync_thread(tag: str) -> None:
        try:
            results[tag] = _sync_producer(through_transaction, tag, count)
        except BaseException as exc:
            errors.append(exc)

    with _pool_watch(transaction_pooler, database_url) as peaks:
        async with running_worker(direct(database_url), "work"):
            threads = [threading.Thread(target=sync_thread, args=(f"s{n}",)) for n in range(4)]
            for thread in threads:
                thread.start()
            tags = [f"a{n}" for n in range(6)]
            gathered = await asyncio.gather(*(_async_producer(tag, count) for tag in tags))
            for thread in threads:
                await asyncio.to_thread(thread.join, 120)
    assert errors == []
    for tag, got in zip(tags, gathered, strict=True):
        assert got == [f"{tag}-{k}" for k in range(count)]
    for n in range(4):
        tag = f"s{n}"
        assert results[tag] == [f"{tag}-later"] + [f"{tag}-{k}" for k in range(count)] + [
            f"{tag}-tx{k}" for k in range(count)
        ]
    # More clients than server connections at once: the servers' sessions were shared.
    assert peaks["clients"] > TRANSACTION_POOL
    assert 0 < peaks["servers"] <= TRANSACTION_POOL


@contextlib.contextmanager
def _pool_watch(pooler_url: str, database_url: str) -> Iterator[dict[str, int]]:
    """The most clients and server connections PgBouncer's pool of the test database had, read
    from its admin console (SHOW POOLS) every few milliseconds while inside."""
    dbname = urlsplit(database_url).path.lstrip("/")
    peaks = {"clients": 0, "servers": 0}
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(
            with_dbname(pooler_url, "pgbouncer"),
            autocommit=True,
            # The admin console speaks the simple query protocol only.
            cursor_factory=psycopg.ClientCursor,
        ) as admin:
            while not done.is_set():
                cur = admin.execute("SHOW POOLS")
                names = [column.name for column in cur.description or ()]
                for values in cur.fetchall():
                    row = dict(zip(names, values, strict=True))
                    if row["database"] != dbname:
                        continue
                    clients = row["cl_active"] + row["cl_waiting"]
                    servers = sum(row[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_login"))
                    peaks["clients"] = max(peaks["clients"], clients)
                    peaks["servers"] = max(peaks["servers"], servers)
                done.wait(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        done.set()
        thread.join(10)


async def test_sync_signal_and_result_through_transaction_pooling(
    database_url: str, through_transaction: str
) -> None:
    async with running_worker(direct(database_url), "orders"):
        workflow_id = await asyncio.to_thread(app.collect_signals.queue_sync, 2)
        for item in ("x", "y"):
            await asyncio.to_thread(workflows.send_signal_sync, workflow_id, "item", item)
        result = await asyncio.to_thread(workflows.get_result_sync, workflow_id, 30)
    assert result == ["x", "y"]


async def test_a_worker_refuses_a_transaction_pooler(through_transaction: str) -> None:
    worker = Worker(["work"], settings=Settings.from_env())
    with pytest.raises(ConfigurationError, match="WORKFLOWS_POOLER=session"):
        await worker.run()


def test_migrate_refuses_a_transaction_pooler(through_transaction: str) -> None:
    with pytest.raises(ConfigurationError, match="migrate cannot run through a transaction"):
        workflows.migrate()


@pytest.fixture
async def through_session(
    database_url: str, session_pooler: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    url = _same_database(session_pooler, database_url)
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", url)
    monkeypatch.setenv("WORKFLOWS_POOLER", "session")
    yield url
    await client.reset_async()
    client.reset_sync()


async def test_a_worker_through_session_pooling_runs_jobs_and_signalled_workflows(
    through_session: str,
) -> None:
    settings = Settings.from_env()
    async with running_worker(settings, "work", "orders"):
        job_id = await jobs_app.record.queue("session")
        assert await workflows.get_result(job_id, timeout=30) == "session"

        workflow_id = await app.approval.queue("o-2")
        await _until_waiting(workflow_id)
        await workflows.send_signal(workflow_id, "approved", {"approved": True})
        result = await workflows.get_result(workflow_id, timeout=30)
    assert result["status"] == "approved"
    assert result["order_id"] == "o-2"


async def test_session_pooling_gets_the_session_settings_sent_after_connecting(
    through_session: str,
) -> None:
    # PgBouncer would refuse them as startup parameters; sent as SET they hold for the session.
    store = await PostgresStore.connect(Settings.from_env())
    try:
        async with store.pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            assert await conn.fetchval("SHOW jit") == "off"
    finally:
        await store.close()
