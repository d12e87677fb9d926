"""Batched writes on their own: activations of several workflows in one write, a refused item
isolated, and the write health that closes a worker's slots."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.integration.conftest import wait_status
from workflows import codec, workflow
from workflows.config import Settings
from workflows.records import Advance, Advanced, Claimed, Outcome, Registration, plan
from workflows.replay import WorkflowInstance
from workflows_postgres.store import PostgresStore
from workflows_worker.batches import ActivationBatches, OutcomeQueue, WriteHealth
from workflows_worker.errors import UnstorableOutcomeError
from workflows_worker.wakeup import Wakeup

QUEUE = "batches"


@workflow(queue=QUEUE)
async def returns(value: str) -> str:
    return value


def finished(c: Claimed, result: str) -> Advance:
    """The activation that completes ``c`` with ``result`` (JSON text), as the runner makes it."""
    args, kwargs = codec.decode_call(c.args)
    instance, activation = WorkflowInstance.replay(returns.fn, args, kwargs, [])
    instance.close()
    assert activation.status == "completed"
    return Advance(
        workflow=c,
        number=activation.number,
        delivered=list(activation.delivered),
        outcome="completed",
        result=result,
        error=None,
        plan=plan(Settings.from_env(), c.queue, activation.number, activation.commands),
    )


async def test_an_activation_the_database_refuses_fails_alone_and_its_batch_is_written(
    store: PostgresStore,
) -> None:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    ids = [await returns.queue(key) for key in ("one", "bad", "three")]
    _, claimed = await store.pump(worker_id, [], [QUEUE], 3)
    claims = {c.id: c for c in claimed}
    wakeup = Wakeup()
    health = WriteHealth(30)
    batches = ActivationBatches(store, worker_id, wakeup, health)
    results = {
        ids[0]: '"one"',
        ids[1]: '"\x00"',  # text the database cannot store: this item's own doing
        ids[2]: '"three"',
    }
    sending = [asyncio.create_task(batches.send(finished(claims[i], results[i]))) for i in ids]
    await asyncio.sleep(0)  # every item handed over before the batch is cut
    assert not batches.idle
    batches.dispatch()
    assert batches.writing
    done = await asyncio.wait_for(asyncio.gather(*sending, return_exceptions=True), 10)
    assert [d.outcome for d in (done[0], done[2]) if isinstance(d, Advanced)] == [
        "completed",
        "completed",
    ]
    assert isinstance(done[1], UnstorableOutcomeError)
    assert batches.idle
    assert not health.failing
    assert (await wait_status(store, ids[0], {"completed"}))["result"] == "one"
    assert (await wait_status(store, ids[2], {"completed"}))["result"] == "three"
    # Left for its execution to fail with a clean error (see the workflow runner).
    assert (await store.get_status(ids[1]))["status"] == "running"


async def test_a_workflows_items_are_written_one_batch_at_a_time(store: PostgresStore) -> None:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    first, second = await returns.queue("a"), await returns.queue("b")
    _, claimed = await store.pump(worker_id, [], [QUEUE], 2)
    claims = {c.id: c for c in claimed}
    batches = ActivationBatches(store, worker_id, Wakeup(), WriteHealth(30))
    one = asyncio.create_task(batches.send(finished(claims[first], '"a"')))
    await asyncio.sleep(0)
    batches.dispatch()
    # Another item of the same workflow waits for the batch that has the first; another
    # workflow's goes in a batch of its own at once.
    again = asyncio.create_task(batches.send(finished(claims[first], '"a"')))
    other = asyncio.create_task(batches.send(finished(claims[second], '"b"')))
    await asyncio.sleep(0)
    batches.dispatch()
    assert not batches.idle  # the second item of the first workflow is still queued
    assert (await one).outcome == "completed"
    assert (await other).outcome == "completed"
    batches.dispatch()
    # Written after the first: its claim was used up by then, so the write is fenced off.
    assert (await asyncio.wait_for(again, 10)).outcome == "stale"
    assert batches.idle


def test_writes_count_as_failing_only_after_the_timeout() -> None:
    health = WriteHealth(0.05)
    health.failed()
    assert not health.failing
    time.sleep(0.06)  # the time itself is what is tested
    health.failed()  # failing again does not restart the clock
    assert health.failing
    health.ok()
    assert not health.failing


async def _pump_until_written(batches: ActivationBatches, wakeup: Wakeup) -> None:
    """The pump's part: a coalescing dispatch each time the wakeup rings, until all is written."""
    while True:
        await wakeup.wait(5)
        wakeup.clear()
        batches.dispatch(coalesce=True)
        if batches.idle:
            return


def _count_writes(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch the store is asked to write, in order (the real store writes it)."""
    writes: list[int] = []
    advance = store.advance

    async def counted(worker: str, items: list[Advance]) -> list[Advanced]:
        writes.append(len(items))
        return await advance(worker, items)

    monkeypatch.setattr(store, "advance", counted)
    return writes


async def test_activations_arriving_pass_after_pass_go_in_one_write(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a workflow of instant steps hands them over while nothing is being written: one
    # dispatch (its two batches, see the next test), not one for the first and another (after
    # it) for the rest.
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    ids = [await returns.queue(key) for key in ("a", "b", "c", "d", "e")]
    _, claimed = await store.pump(worker_id, [], [QUEUE], len(ids))
    writes = _count_writes(store, monkeypatch)
    wakeup = Wakeup()
    batches = ActivationBatches(store, worker_id, wakeup, WriteHealth(30))
    pumping = asyncio.create_task(_pump_until_written(batches, wakeup))
    sending = []
    for c in claimed:
        sending.append(asyncio.create_task(batches.send(finished(c, '"done"'))))
        await asyncio.sleep(0)  # the next arrives on the next pass of the event loop
    done = await asyncio.wait_for(asyncio.gather(*sending), 10)
    await asyncio.wait_for(pumping, 10)
    assert [d.outcome for d in done] == ["completed"] * len(ids)
    assert writes == [3, 2]


async def test_a_dispatch_with_nothing_written_sends_two_batches_at_once(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In one batch, every workflow here would wait for the same write and come back for the
    # next in one batch again: one write at a time, a core of the server idle.
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    ids = [await returns.queue(key) for key in ("a", "b", "c")]
    _, claimed = await store.pump(worker_id, [], [QUEUE], len(ids))
    claims = {c.id: c for c in claimed}
    batches = ActivationBatches(store, worker_id, Wakeup(), WriteHealth(30))
    advance = store.advance
    written: list[list[str]] = []
    both_began = asyncio.Event()

    async def counted(worker: str, items: list[Advance]) -> list[Advanced]:
        written.append([item.workflow.id for item in items])
        if len(written) == 2:
            both_began.set()
        # Each write waits for the other to begin: one after the other, this never ends.
        await asyncio.wait_for(both_began.wait(), 10)
        return await advance(worker, items)

    monkeypatch.setattr(store, "advance", counted)
    # The first workflow's two items, then the others': its items stay in one batch, in order.
    sending = [
        asyncio.create_task(batches.send(finished(claims[i], '"x"')))
        for i in (ids[0], ids[1], ids[0], ids[2])
    ]
    await asyncio.sleep(0)
    batches.dispatch()
    done = await asyncio.wait_for(asyncio.gather(*sending), 10)
    assert written == [[ids[0], ids[0], ids[2]], [ids[1]]]
    # The first item completes its workflow, the second finds the claim used up.
    assert [d.outcome for d in done] == ["completed", "completed", "stale", "completed"]
    assert batches.idle


async def test_a_dispatch_is_not_held_back_by_arrivals_that_never_stop(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    workflow_id = await returns.queue("a")
    (claim,) = (await store.pump(worker_id, [], [QUEUE], 1))[1]
    writes = _count_writes(store, monkeypatch)
    wakeup = Wakeup()
    batches = ActivationBatches(store, worker_id, wakeup, WriteHealth(30))
    pumping = asyncio.create_task(_pump_until_written(batches, wakeup))
    sending = []
    # An item every pass until the first write has begun (each pass of a busy worker brings
    # one), for at most 2 s.
    deadline = time.monotonic() + 2
    while not writes and time.monotonic() < deadline:
        sending.append(asyncio.create_task(batches.send(finished(claim, '"a"'))))
        await asyncio.sleep(0)
    assert writes, "a stream of activations held the write back for 2 s"
    done = await asyncio.wait_for(asyncio.gather(*sending), 10)
    await asyncio.wait_for(pumping, 10)
    # The first item completes the workflow; the ones after it find its claim used up.
    assert done[0].outcome == "completed"
    assert {d.outcome for d in done[1:]} <= {"stale"}
    assert (await store.get_status(workflow_id))["status"] == "completed"


async def test_an_activation_whose_sender_is_cancelled_is_written_all_the_same(
    store: PostgresStore,
) -> None:
    # The shutdown cancels executions waiting on their write: what they decided is not lost.
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    workflow_id = await returns.queue("kept")
    (claim,) = (await store.pump(worker_id, [], [QUEUE], 1))[1]
    wakeup = Wakeup()
    batches = ActivationBatches(store, worker_id, wakeup, WriteHealth(30))
    sending = asyncio.create_task(batches.send(finished(claim, '"kept"')))
    await asyncio.sleep(0)
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)
    assert sending.cancelled()
    await asyncio.wait_for(_pump_until_written(batches, wakeup), 10)
    assert (await wait_status(store, workflow_id, {"completed"}))["result"] == "kept"


async def test_an_outcome_whose_sender_is_cancelled_stays_queued() -> None:
    outcomes = OutcomeQueue(Wakeup())
    outcome = Outcome(str(uuid.uuid4()), 1, "completed", "null", None)
    recording = asyncio.create_task(outcomes.record(outcome))
    await asyncio.sleep(0)
    recording.cancel()
    await asyncio.gather(recording, return_exceptions=True)
    assert [o for o, _ in outcomes.take()] == [outcome]
