"""Handoff: a job enqueued while a worker sits idle goes straight to it (migration 0003).

The enqueue inserts it running under the worker that offered itself and hands it over in the
notification; the worker starts it without a claim. An offer counts only while the worker's
listening session holds its advisory lock and until it lapses, and a worker that filled up
meanwhile gives the job back.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.integration.conftest import StartWorker, until, wait_status
from workflows import job, workflow
from workflows.records import Registration
from workflows_postgres import client
from workflows_postgres.store import PostgresStore, handed_over

QUEUE = "handoff"
ran: list[str] = []
gates: dict[str, asyncio.Event] = {}


@job(queue=QUEUE, retries=0)
async def note(key: str) -> str:
    ran.append(key)
    return key


@job(queue=QUEUE, retries=0)
async def held(key: str) -> str:
    ran.append(key)
    await gates.setdefault(key, asyncio.Event()).wait()
    return key


@workflow(queue=QUEUE)
async def flow(key: str) -> str:
    return key


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()
    gates.clear()


async def row(store: PostgresStore, execution_id: str) -> Any:
    return await store.pool.fetchrow(
        "SELECT status, worker_id::text AS worker_id, attempts, lease, "
        "started_at = created_at AS in_enqueue FROM workflows.executions WHERE id = $1::uuid",
        execution_id,
    )


async def offers(store: PostgresStore) -> dict[str, int]:
    rows = await store.pool.fetch(
        "SELECT worker_id::text AS worker_id, lock_key FROM workflows.worker_offers"
    )
    return {r["worker_id"]: r["lock_key"] for r in rows}


async def no_offers(store: PostgresStore) -> bool:
    return not await offers(store)


class Offerer:
    """A worker's side of an offer, played by the test: a registration, a lock, a listener."""

    def __init__(self, store: PostgresStore, conn: asyncpg.Connection) -> None:
        self.store = store
        self.conn = conn
        self.id = str(uuid.uuid4())
        self.lock_key = random.getrandbits(63)
        self.heard: asyncio.Queue[str] = asyncio.Queue()

    async def offer(self, seconds: float = 60) -> None:
        await self.store.offer(self.id, [QUEUE], self.lock_key, seconds)


@pytest.fixture
async def offerer(store: PostgresStore) -> AsyncIterator[Offerer]:
    conn = await asyncpg.connect(store.dsn)
    o = Offerer(store, conn)
    await store.register_worker(o.id, Registration("test", 1, (QUEUE,), "test"))
    await conn.add_listener(
        store.q.start_channel, lambda _c, _p, _ch, payload: o.heard.put_nowait(payload)
    )
    try:
        yield o
    finally:
        await conn.close()
        await store.deregister_worker(o.id)


async def test_an_idle_worker_starts_a_job_handed_over_by_its_enqueue(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    worker = await start_worker(QUEUE)
    await until(lambda: offers(store), "the idle worker's offer")
    job_id = await held.queue("first")
    # Inserted running under the worker by the enqueue itself: no claim came after it.
    r = await row(store, job_id)
    assert (r["status"], r["worker_id"], r["attempts"], r["lease"]) == (
        "running",
        worker.id,
        1,
        1,
    )
    assert r["in_enqueue"]
    assert await offers(store) == {}
    await until(lambda: ran == ["first"], "the handed-over job to start")
    gates["first"].set()
    status = await wait_status(store, job_id, {"completed", "failed"})
    assert (status["status"], status["result"], status["attempts"]) == ("completed", "first", 1)
    # Idle again: it offers itself again, and the next job goes the same way.
    await until(lambda: offers(store), "a new offer once idle")
    second = await note.queue("second")
    assert (await row(store, second))["in_enqueue"]
    assert (await wait_status(store, second, {"completed"}))["result"] == "second"
    assert ran == ["first", "second"]


# UTF8: the statement through libpq; LATIN1: through psycopg's cursor (sync.enqueue_one).
@pytest.mark.parametrize("encoding", ["UTF8", "LATIN1"])
async def test_a_blocking_enqueue_hands_over_to_an_idle_worker_too(
    store: PostgresStore,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
) -> None:
    worker = await start_worker(QUEUE)
    await until(lambda: offers(store), "the idle worker's offer")
    monkeypatch.setenv("PGCLIENTENCODING", encoding)
    client.reset_sync()
    job_id = await asyncio.to_thread(note.queue_sync, "blocking")
    r = await row(store, job_id)
    assert (r["status"], r["worker_id"], r["in_enqueue"]) == ("running", worker.id, True)
    assert (await wait_status(store, job_id, {"completed"}))["result"] == "blocking"
    # The worker took no other run: the enqueue inserted one.
    n = await store.pool.fetchval(
        "SELECT count(*) FROM workflows.executions WHERE queue = $1", QUEUE
    )
    assert n == 1


async def test_an_idle_worker_starts_a_workflow_handed_over_by_its_enqueue(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    worker = await start_worker(QUEUE)
    await until(lambda: offers(store), "the idle worker's offer")
    wf = await flow.queue("handed")
    # Started by the enqueue itself, with its deadline, as its first claim would have.
    r = await row(store, wf)
    assert (r["status"], r["worker_id"], r["attempts"], r["lease"]) == (
        "running",
        worker.id,
        1,
        1,
    )
    assert r["in_enqueue"]
    deadline = await store.pool.fetchval(
        "SELECT deadline - created_at FROM workflows.executions WHERE id = $1::uuid", wf
    )
    assert deadline is not None and deadline.total_seconds() > 0
    status = await wait_status(store, wf, {"completed", "failed"})
    assert (status["status"], status["result"]) == ("completed", "handed")


async def test_a_stopping_worker_withdraws_its_offer(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    worker = await start_worker(QUEUE)
    # The key of the lock its listening session holds, as its offer names it.
    lock_key = (await until(lambda: offers(store), "the idle worker's offer"))[worker.id]
    await held.queue("draining")
    await until(lambda: ran == ["draining"], "the job to run")
    # An offer still standing when it is told to stop (made just before it got the job).
    await store.offer(worker.id, [QUEUE], lock_key, 60)
    worker.stop()
    await until(lambda: no_offers(store), "the offer to be withdrawn")
    assert worker.healthy()  # still finishing its job
    r = await row(store, await note.queue("after stop"))
    assert (r["status"], r["worker_id"], r["in_enqueue"]) == ("pending", None, None)
    gates["draining"].set()


async def test_the_notification_names_the_job_and_the_table_holds_the_claim(
    store: PostgresStore, offerer: Offerer
) -> None:
    await offerer.conn.execute("SELECT pg_advisory_lock($1)", offerer.lock_key)
    await offerer.offer()
    job_id = await note.options(priority=2, timeout=7).queue("café", n=1e16)
    r = await row(store, job_id)
    assert (r["status"], r["worker_id"], r["lease"]) == ("running", offerer.id, 1)
    payload = await asyncio.wait_for(offerer.heard.get(), 10)
    # Ids only: any role that can connect may LISTEN, so no argument travels on the channel.
    assert payload == f"{offerer.id} {job_id}"
    assert handed_over(payload, str(uuid.uuid4())) is None
    assert handed_over(payload, offerer.id) == job_id
    claimed = await store.take_handoff(job_id, offerer.id)
    assert claimed is not None
    assert (claimed.id, claimed.name, claimed.queue) == (job_id, note.path, QUEUE)
    assert (claimed.kind, claimed.lease, claimed.attempts, claimed.timeout) == ("job", 1, 1, 7)
    # The arguments exactly as the producer encoded them.
    assert claimed.args == '{"args":["café"],"kwargs":{"n":1e+16}}'
    # Another worker is not handed it, whatever it is told.
    assert await store.take_handoff(job_id, str(uuid.uuid4())) is None
    # One offer, one job: the next waits for a claim.
    assert (await row(store, await note.queue("next")))["status"] == "pending"


async def test_no_handoff_without_the_lock_or_after_the_offer_lapsed(
    store: PostgresStore, offerer: Offerer
) -> None:
    # Nobody holds the lock: the worker's session (and so the worker) is gone.
    await offerer.offer()
    assert (await row(store, await note.queue("no lock")))["status"] == "pending"
    assert offerer.id in await offers(store)
    await offerer.conn.execute("SELECT pg_advisory_lock($1)", offerer.lock_key)
    await offerer.offer(seconds=-1)
    assert (await row(store, await note.queue("lapsed")))["status"] == "pending"
    await offerer.offer()
    now = await note.queue("now")
    assert (await row(store, now))["status"] == "running"
    # Notifications arrive in commit order: once this one is heard, none came before it.
    assert await asyncio.wait_for(offerer.heard.get(), 5) == f"{offerer.id} {now}"
    assert offerer.heard.empty()


async def test_only_runs_to_start_now_are_handed_over_whatever_their_size(
    store: PostgresStore, offerer: Offerer
) -> None:
    await offerer.conn.execute("SELECT pg_advisory_lock($1)", offerer.lock_key)
    await offerer.offer()
    later = await note.options(delay=60).queue("later")
    keyed = await note.options(idempotency_key="k-1").queue("keyed")
    later_wf = await flow.options(delay=60).queue("later")
    for execution_id in (later, keyed, later_wf):
        assert (await row(store, execution_id))["status"] == "pending"
    assert offerer.heard.empty()
    # The arguments stay in the table, so a large job goes the fast way too.
    assert (await row(store, await note.queue("x" * 100_000)))["status"] == "running"


async def test_a_job_handed_to_a_worker_that_filled_up_goes_back_and_runs_once(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    worker = await start_worker(QUEUE, concurrency=1)
    lock_key = (await until(lambda: offers(store), "the idle worker's offer"))[worker.id]
    busy = await held.queue("busy")
    await until(lambda: ran == ["busy"], "the first job to run")
    # An offer made just before it filled up, taken now.
    await store.offer(worker.id, [QUEUE], lock_key, 60)
    job_id = await note.queue("late")
    assert (await row(store, job_id))["in_enqueue"]
    # Given back, the attempt not counted, and nobody runs it while the worker is full.
    await wait_status(store, job_id, {"pending"})
    assert ran == ["busy"]
    gates["busy"].set()
    status = await wait_status(store, job_id, {"completed", "failed"})
    assert (status["status"], status["attempts"]) == ("completed", 1)
    assert (await wait_status(store, busy, {"completed"}))["result"] == "busy"
    assert ran == ["busy", "late"]


async def test_a_job_enqueued_in_the_callers_transaction_is_not_handed_over(
    store: PostgresStore, offerer: Offerer
) -> None:
    # Handed over, it would hold the worker's offer for as long as the caller's transaction.
    await offerer.conn.execute("SELECT pg_advisory_lock($1)", offerer.lock_key)
    await offerer.offer()
    async with store.pool.acquire() as conn, conn.transaction():
        job_id = await note.options(conn=conn).queue("in my transaction")
    assert (await row(store, job_id))["status"] == "pending"
    assert offerer.id in await offers(store)


async def test_renewing_or_withdrawing_an_offer_never_waits_for_an_enqueue_taking_it(
    store: PostgresStore, offerer: Offerer
) -> None:
    await offerer.offer()
    async with store.pool.acquire() as conn, conn.transaction():
        # An enqueue in the middle of taking the offer holds its row.
        await conn.execute(
            "SELECT 1 FROM workflows.worker_offers WHERE worker_id = $1::uuid FOR UPDATE",
            offerer.id,
        )
        await asyncio.wait_for(offerer.offer(seconds=120), 5)
        await asyncio.wait_for(store.withdraw(offerer.id), 5)
    # Left as it was: the enqueue's commit decides.
    assert await store.pool.fetchval(
        "SELECT expires_at < now() + interval '90 seconds' FROM workflows.worker_offers "
        "WHERE worker_id = $1::uuid",
        offerer.id,
    )
