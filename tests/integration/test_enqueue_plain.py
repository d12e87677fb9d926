"""A plain ``f.queue(x)`` / ``f.queue_sync(x)`` (no options) reuses what is the same for every
such call (the request, the store): each call still sees the function, the configuration and
the codec as they are at that call, and a lost connection or a refused value fails one call."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest

from tests.integration import codec_app
from workflows import codec, job, workflow
from workflows.errors import DatabaseUnavailableError, SerializationError
from workflows_postgres import client


@job(queue="plain")
async def plain(x: float) -> float:
    return x


@workflow(queue="plain-flows", version=3, timeout=120)
async def plain_flow(x: float) -> float:
    return x


@pytest.fixture
async def rows(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """An admin connection to the test's database; the process's stores closed afterwards."""
    admin = await asyncpg.connect(database_url)
    yield admin
    await admin.close()
    await client.reset_async()


@pytest.fixture
def restored() -> Iterator[None]:
    """``plain``'s attributes as declared, whatever a test set on it."""
    saved = plain.retries, plain.timeout, plain.queue_name
    yield
    plain.retries, plain.timeout, plain.queue_name = saved


async def enqueue(sync: bool, x: float) -> str:
    if sync:
        return await asyncio.to_thread(plain.queue_sync, x)
    return await plain.queue(x)


async def row(admin: asyncpg.Connection, execution_id: str) -> asyncpg.Record:
    found = await admin.fetchrow(
        "SELECT queue, max_retries, args::text AS args FROM workflows.executions WHERE id = $1",
        execution_id,
    )
    assert found is not None
    return found


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_each_plain_call_sees_the_function_and_the_settings_of_its_time(
    rows: asyncpg.Connection, restored: None, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    monkeypatch.setenv("WORKFLOWS_DEFAULT_RETRIES", "7")
    first = await row(rows, await enqueue(sync, 1.0))
    assert (first["queue"], first["max_retries"]) == ("plain", 7)
    assert json.loads(first["args"]) == {"args": [1.0], "kwargs": {}}

    monkeypatch.setenv("WORKFLOWS_DEFAULT_RETRIES", "2")
    assert (await row(rows, await enqueue(sync, 2.0)))["max_retries"] == 2

    plain.retries = 4
    plain.queue_name = "elsewhere"
    changed = await row(rows, await enqueue(sync, 3.0))
    assert (changed["queue"], changed["max_retries"]) == ("elsewhere", 4)


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_codec_set_after_plain_calls_encodes_the_next_one(
    rows: asyncpg.Connection, sync: bool
) -> None:
    before = await row(rows, await enqueue(sync, 1.0))
    assert json.loads(before["args"]) == {"args": [1.0], "kwargs": {}}
    codec.use(codec_app.payloads)
    try:
        after = await row(rows, await enqueue(sync, 2.0))
    finally:
        codec.use(None)
    assert set(json.loads(after["args"])) == {"$workflows_wrapped", "data"}
    again = await row(rows, await enqueue(sync, 3.0))
    assert json.loads(again["args"]) == {"args": [3.0], "kwargs": {}}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_value_the_database_refuses_fails_that_plain_call_alone(
    rows: asyncpg.Connection, restored: None, sync: bool
) -> None:
    await enqueue(sync, 1.0)  # the connection is open
    # Set directly, past the decorator's check: only the database can refuse it.
    plain.retries = 2**40
    with pytest.raises(SerializationError, match="the database refused a value"):
        await enqueue(sync, 2.0)
    plain.retries = 1
    assert (await row(rows, await enqueue(sync, 3.0)))["max_retries"] == 1


async def test_plain_calls_go_on_after_the_producer_connection_is_lost(
    rows: asyncpg.Connection,
) -> None:
    await plain.queue(1.0)
    store = await client.async_store().get()
    producer = store._producer
    assert producer is not None
    await rows.execute("SELECT pg_terminate_backend($1)", producer.get_server_pid())
    # The loss may surface on the first call after it (as the server's error, as on a pooled
    # connection), never on the next.
    with contextlib.suppress(DatabaseUnavailableError, asyncpg.PostgresError):
        await plain.queue(2.0)
    again = await asyncio.wait_for(plain.queue(3.0), 10)
    assert (await row(rows, again))["queue"] == "plain"


async def test_plain_sync_calls_go_on_after_their_connection_is_lost(
    rows: asyncpg.Connection,
) -> None:
    loop = asyncio.get_running_loop()
    # One thread throughout: the sync store keeps a connection per thread.
    with ThreadPoolExecutor(max_workers=1) as thread:

        def first() -> int:
            plain.queue_sync(1.0)
            pid: int = client.sync_store()._local.conn.info.backend_pid
            return pid

        def after_the_loss() -> str:
            # The loss may surface on the first call after it, never on the next.
            with contextlib.suppress(DatabaseUnavailableError):
                plain.queue_sync(2.0)
            return plain.queue_sync(3.0)

        pid = await loop.run_in_executor(thread, first)
        await rows.execute("SELECT pg_terminate_backend($1)", pid)
        again = await loop.run_in_executor(thread, after_the_loss)
    assert (await row(rows, again))["queue"] == "plain"


# Every column but the ones each insert sets afresh; the deadline as its distance from run_at
# (both from now(), the transaction's start).
WRITTEN = (
    "SELECT to_jsonb(e) - 'id' - 'created_at' - 'run_at' - 'deadline' AS row, "
    "extract(epoch FROM e.deadline - e.run_at) AS deadline_after, "
    "e.run_at = e.created_at AS due_now FROM workflows.executions e WHERE e.id = $1"
)


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("fn", [plain, plain_flow], ids=["job", "workflow"])
async def test_a_plain_call_writes_the_row_every_other_enqueue_writes(
    rows: asyncpg.Connection, sync: bool, fn: Any
) -> None:
    """A plain call has a statement of its own (enqueue_now), every other call enqueue():
    the same function's runs must come out the same either way."""
    # The first async call opens the producer's own connection (through enqueue()).
    await (asyncio.to_thread(fn.queue_sync, 0.5) if sync else fn.queue(0.5))
    if sync:
        quick = await asyncio.to_thread(fn.queue_sync, 1.5)
        other = await asyncio.to_thread(fn.options(priority=0).queue_sync, 1.5)
    else:
        quick = await fn.queue(1.5)
        other = await fn.options(priority=0).queue(1.5)
    assert fn._plain[1].prepared[0] == "enqueue_now"
    mine, theirs = await rows.fetchrow(WRITTEN, quick), await rows.fetchrow(WRITTEN, other)
    assert dict(mine) == dict(theirs)
    assert mine["due_now"]
    assert mine["deadline_after"] == (120 if fn is plain_flow else None)
    assert json.loads(mine["row"])["status"] == "pending"


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_plain_call_that_does_not_start_now_takes_enqueue(
    rows: asyncpg.Connection, restored: None, sync: bool
) -> None:
    """A run with a key or a limit is enqueue()'s: what enqueue_now leaves out must not be
    dropped (the key's slot, the hold behind it)."""
    plain.concurrency_key = "one-at-a-time"
    plain.concurrency_limit = 1
    try:
        ids = [await enqueue(sync, float(n)) for n in range(2)]
        assert plain._plain[1].prepared[0] == "enqueue"
        held = await rows.fetch(
            "SELECT held, concurrency_key FROM workflows.executions WHERE id = ANY($1::uuid[]) "
            "ORDER BY run_at",
            ids,
        )
        assert [(r["held"], r["concurrency_key"]) for r in held] == [
            (False, "one-at-a-time"),
            (True, "one-at-a-time"),
        ]
    finally:
        plain.concurrency_key = None
        plain.concurrency_limit = None
