"""Single enqueues one after another go on the store's own connection, not the pool's."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from tests.integration import jobs_app
from tests.integration.conftest import executions_locked, until, waiting_on_a_lock
from workflows.api import CallOptions
from workflows.config import Settings
from workflows.errors import DatabaseUnavailableError
from workflows_postgres.store import PostgresStore


async def enqueue(store: PostgresStore, tag: str) -> str:
    request = jobs_app.record.request(CallOptions(), (tag,), {}, Settings.from_env())
    return await store.enqueue(request)


async def count(store: PostgresStore, ids: list[str]) -> int:
    admin = await asyncpg.connect(store.dsn)
    try:
        value: int = await admin.fetchval(
            "SELECT count(*) FROM workflows.executions WHERE id = ANY($1::uuid[])", ids
        )
        return value
    finally:
        await admin.close()


async def test_sequential_enqueues_need_no_pooled_connection(small_store: PostgresStore) -> None:
    held = [await small_store.pool.acquire() for _ in range(2)]
    try:
        ids = [await asyncio.wait_for(enqueue(small_store, f"t{i}"), 10) for i in range(5)]
    finally:
        for conn in held:
            await small_store.pool.release(conn)
    assert len(set(ids)) == 5
    assert await count(small_store, ids) == 5


async def test_enqueues_need_no_pooled_connection_while_results_are_awaited(
    small_store: PostgresStore,
) -> None:
    # A web app's requests waiting for results must not send its enqueues to the pool.
    pending = await enqueue(small_store, "awaited")
    waiter = asyncio.create_task(small_store.wait_finished(pending, 60))
    await until(lambda: small_store.results.waiting == 1, "the wait registered")
    held = [await small_store.pool.acquire() for _ in range(2)]
    try:
        ids = [await asyncio.wait_for(enqueue(small_store, f"w{i}"), 10) for i in range(3)]
        plain = jobs_app.record.request(CallOptions(), ("plain",), {}, Settings.from_env())
        ids.append(await asyncio.wait_for(small_store.enqueue_one(plain, plain.args), 10))
    finally:
        for conn in held:
            await small_store.pool.release(conn)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    assert await count(small_store, ids) == 4


async def test_concurrent_enqueues_share_the_connection_and_the_pool(
    small_store: PostgresStore,
) -> None:
    ids = await asyncio.gather(*(enqueue(small_store, f"c{i}") for i in range(50)))
    assert len(set(ids)) == 50
    assert await count(small_store, ids) == 50


async def test_an_enqueue_cancelled_mid_statement_leaves_the_next_one_working(
    small_store: PostgresStore,
) -> None:
    await enqueue(small_store, "warm")  # the producer connection is open
    async with executions_locked(small_store.dsn) as blocker:
        stuck = asyncio.create_task(enqueue(small_store, "stuck"))
        await until(lambda: waiting_on_a_lock(blocker), "the enqueue waits on the lock")
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
    after = await asyncio.wait_for(enqueue(small_store, "after"), 10)
    assert await count(small_store, [after]) == 1


async def test_a_lost_producer_connection_is_replaced(small_store: PostgresStore) -> None:
    await enqueue(small_store, "warm")
    producer = small_store._producer
    assert producer is not None
    admin = await asyncpg.connect(small_store.dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", producer.get_server_pid())
    finally:
        await admin.close()
    # The loss may surface on the first call after it (as on a pooled connection caught
    # mid-query), never on the next.
    with contextlib.suppress(DatabaseUnavailableError, asyncpg.PostgresError):
        await enqueue(small_store, "maybe")
    again = await asyncio.wait_for(enqueue(small_store, "again"), 10)
    assert await count(small_store, [again]) == 1
