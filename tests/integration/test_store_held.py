"""The pump's rounds go on a pool connection the store keeps for them, not one acquired per
round: lost, cancelled or busy, it never wedges a round, and the store still closes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from tests.integration import jobs_app
from tests.integration.conftest import executions_locked, until, waiting_on_a_lock
from workflows.config import Settings
from workflows.records import Claimed, Outcome, Registration
from workflows_postgres.store import PostgresStore

QUEUE = "held-conn"


async def _claimed(store: PostgresStore, n: int) -> list[Claimed]:
    worker = str(uuid.uuid4())
    await store.register_worker(worker, Registration("test", 1, (QUEUE,), "test"))
    for i in range(n):
        await jobs_app.record.options(queue=QUEUE).queue(f"held {i}")
    claimed = await store.claim(worker, [QUEUE], n)
    assert len(claimed) == n
    return claimed


def _done(c: Claimed) -> Outcome:
    return Outcome(c.id, c.lease, "completed", result=json.dumps(c.id))


async def _statuses(store: PostgresStore, ids: list[str]) -> list[str]:
    return [(await store.get_status(i))["status"] for i in ids]


async def _after_one_round(store: PostgresStore, n: int) -> tuple[list[Claimed], Any]:
    """``n`` claims, the first one's outcome recorded: the held connection that took it."""
    claimed = await _claimed(store, n)
    assert await store.record_outcomes([_done(claimed[0])]) == {claimed[0].id}
    held = store._held
    assert held is not None
    return claimed, held


async def test_rounds_reuse_one_connection_and_leave_the_pool_the_rest(
    small_store: PostgresStore,
) -> None:
    claimed, held = await _after_one_round(small_store, 3)
    pid = held.get_server_pid()
    # The pool's other connection serves everything else meanwhile.
    async with small_store.pool.acquire() as other:
        assert await other.fetchval("SELECT 1") == 1
        assert await small_store.record_outcomes([_done(claimed[1])]) == {claimed[1].id}
    assert small_store._held is held and held.get_server_pid() == pid
    assert await small_store.record_outcomes([_done(claimed[2])]) == {claimed[2].id}
    assert await _statuses(small_store, [c.id for c in claimed]) == ["completed"] * 3


async def test_a_connection_lost_while_idle_is_replaced_before_the_next_round(
    small_store: PostgresStore,
) -> None:
    claimed, held = await _after_one_round(small_store, 2)
    pid = held.get_server_pid()
    # On the pool's other connection.
    assert await small_store.pool.fetchval("SELECT pg_terminate_backend($1)", pid)

    def noticed() -> bool:
        # asyncpg closes the connection and detaches its proxy, whose every call then raises.
        try:
            return bool(held.is_closed())
        except asyncpg.InterfaceError:
            return True

    await until(noticed, "the client noticed the lost connection")
    # No round fails for it (before, every later round failed on the detached proxy).
    assert await asyncio.wait_for(small_store.record_outcomes([_done(claimed[1])]), 10) == {
        claimed[1].id
    }
    assert small_store._held is not None and small_store._held.get_server_pid() != pid
    assert await _statuses(small_store, [c.id for c in claimed]) == ["completed"] * 2


async def test_a_round_whose_connection_is_lost_mid_statement_fails_alone(
    small_store: PostgresStore,
) -> None:
    claimed, held = await _after_one_round(small_store, 2)
    pid = held.get_server_pid()
    async with executions_locked(small_store.dsn) as blocker:
        round_ = asyncio.create_task(small_store.record_outcomes([_done(claimed[1])]))
        await until(lambda: waiting_on_a_lock(blocker), "the round waits on the lock")
        assert await blocker.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(Exception) as lost:
            await asyncio.wait_for(round_, 10)
    # The pump retries such a round (transient), its outcomes kept for the next.
    assert small_store.is_transient(lost.value)
    assert small_store._held is None
    assert await asyncio.wait_for(small_store.record_outcomes([_done(claimed[1])]), 10) == {
        claimed[1].id
    }
    assert await _statuses(small_store, [c.id for c in claimed]) == ["completed"] * 2
    # The lost one went back to the pool, not leaked: besides the held one, the pool (two at
    # most) still lends one.
    conn = await small_store.pool.acquire(timeout=5)
    await small_store.pool.release(conn)


async def test_a_round_cancelled_mid_statement_leaves_the_next_one_working(
    small_store: PostgresStore,
) -> None:
    claimed, _ = await _after_one_round(small_store, 3)
    async with executions_locked(small_store.dsn) as blocker:
        stuck = asyncio.create_task(small_store.record_outcomes([_done(claimed[1])]))
        await until(lambda: waiting_on_a_lock(blocker), "the round waits on the lock")
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
    # Not "another operation is in progress" on a connection still busy with the cancelled
    # statement: the next round goes through. (The cancelled one may have been written all
    # the same, if the lock went before the server had the cancel: then this one, under the
    # same lease, finds nothing left to record.)
    again = await asyncio.wait_for(small_store.record_outcomes([_done(claimed[1])]), 10)
    assert again <= {claimed[1].id}
    assert await _statuses(small_store, [claimed[1].id]) == ["completed"]
    assert await small_store.record_outcomes([_done(claimed[2])]) == {claimed[2].id}


async def test_a_store_holding_its_round_connection_closes(database_url: str) -> None:
    store = await PostgresStore.connect(Settings.from_env(), min_size=1, max_size=2)
    await _after_one_round(store, 1)
    # The pool's close waits for every connection it lent: the held one goes back first.
    await asyncio.wait_for(store.close(), 10)
