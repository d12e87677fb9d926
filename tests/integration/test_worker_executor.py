"""The executor and the slots on their own: no pump, no listener, a real store.

The test plays the pump's part where one is needed: it writes the outcomes the executor queued.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.conftest import until, wait_status
from workflows import job
from workflows.config import Settings
from workflows.records import Claimed, Outcome, Registration
from workflows_postgres.store import PostgresStore
from workflows_worker.batches import OutcomeQueue
from workflows_worker.executor import Executor
from workflows_worker.imports import ImportPolicy
from workflows_worker.metrics import WorkerMetrics
from workflows_worker.slots import Slots
from workflows_worker.sync_pool import SyncPool
from workflows_worker.wakeup import Wakeup

QUEUE = "executor"
gates: dict[str, asyncio.Event] = {}


@job(queue=QUEUE, retries=0)
async def held(key: str) -> str:
    await gates.setdefault(key, asyncio.Event()).wait()
    return key


@job(queue=QUEUE, retries=2, timeout=0.2)
async def slow() -> None:
    await asyncio.sleep(30)


class NoWorkflows:
    """The executor's workflow part, for jobs only: never asked to run one."""

    async def run(self, c: Claimed) -> str:
        raise AssertionError("no workflow here")

    async def fail(self, c: Claimed, error: dict[str, Any]) -> str:
        raise AssertionError("no workflow here")

    async def advance(
        self, c: Claimed, status: str, result: str | None, error: str | None
    ) -> bool | None:
        return None  # nothing held here: the outcome is recorded alone

    async def written(self, workflow_id: str) -> None:
        raise AssertionError("no workflow here")


@dataclass
class Parts:
    store: PostgresStore
    worker_id: str
    slots: Slots
    outcomes: OutcomeQueue
    executor: Executor
    closed: list[bool]

    async def claim(self, n: int) -> list[Claimed]:
        _, claimed = await self.store.pump(self.worker_id, [], [QUEUE], n)
        return claimed

    async def write(self) -> list[Outcome]:
        """The pump's part: write the outcomes queued, and answer the executions waiting."""
        batch = self.outcomes.take()
        recorded, _ = await self.store.pump(self.worker_id, [o for o, _ in batch], [], 0)
        for outcome, future in batch:
            future.set_result(outcome.id in recorded)
        return [o for o, _ in batch]


@pytest.fixture
async def parts(store: PostgresStore) -> AsyncIterator[Parts]:
    gates.clear()
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    settings = Settings.from_env()
    pool = SyncPool(2)
    closed = [False]
    slots = Slots(2, stuck=lambda: pool.stuck, closed=lambda: closed[0])
    wakeup = Wakeup()
    outcomes = OutcomeQueue(wakeup)
    executor = Executor(
        store,
        worker_id,
        settings,
        slots=slots,
        outcomes=outcomes,
        workflows=NoWorkflows(),
        imports=ImportPolicy.from_settings(settings),
        pool=pool,
        metrics=WorkerMetrics([QUEUE]),
        wakeup=wakeup,
    )
    yield Parts(store, worker_id, slots, outcomes, executor, closed)
    for gate in gates.values():
        gate.set()
    for task in slots.tasks():
        task.cancel()
    await asyncio.gather(*slots.tasks(), return_exceptions=True)
    pool.close()


async def test_free_slots_count_what_runs_what_waits_for_its_write_and_stuck_threads() -> None:
    stuck = [0]
    closed = [False]
    slots = Slots(4, stuck=lambda: stuck[0], closed=lambda: closed[0])
    tasks = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    try:
        assert (slots.free(), slots.eager()) == (4, 5)
        for n, task in enumerate(tasks):
            slots.add(f"e{n}", task, None)
        assert (len(slots), slots.free(), slots.eager()) == (3, 1, 2)
        with slots.writing(), slots.writing():
            # Waiting for their writes, two run no code: their slots are free meanwhile.
            assert slots.free() == 3
            with slots.claiming(2):
                assert slots.free_for_handoff() == 1
            assert slots.free_for_handoff() == 3
        stuck[0] = 1
        assert (slots.capacity(), slots.free()) == (3, 0)
        # The slot of the activation's own run passes to its first activity, whatever is free.
        assert slots.eager() == 1
        stuck[0] = 0
        closed[0] = True
        assert slots.free() == 0
        closed[0] = False
        slots.remove("e0")
        assert ("e0" in slots, slots.free()) == (False, 2)
    finally:
        for task in tasks:
            task.cancel()


async def test_an_execution_waiting_for_its_write_frees_its_slot_until_it_is_recorded(
    parts: Parts,
) -> None:
    job_id = await held.queue("a")
    [c] = await parts.claim(1)
    parts.executor.start(c)
    assert (len(parts.slots), parts.slots.free()) == (1, 1)
    gates.setdefault("a", asyncio.Event()).set()
    await until(lambda: parts.outcomes, "the outcome to be queued")
    # Still in its slot (its task waits), yet the slot counts as free for a claim.
    assert (len(parts.slots), parts.slots.free()) == (1, 2)
    [outcome] = await parts.write()
    assert (outcome.id, outcome.status, outcome.result) == (job_id, "completed", '"a"')
    await until(lambda: len(parts.slots) == 0, "the run to end")
    assert parts.executor.executed == 1
    status = await wait_status(parts.store, job_id, {"completed"})
    assert status["result"] == "a"


async def test_a_timed_out_attempt_is_retried_after_a_jittered_backoff(parts: Parts) -> None:
    job_id = await slow.queue()
    [c] = await parts.claim(1)
    parts.executor.start(c)
    await until(lambda: parts.outcomes, "the failed attempt's outcome")
    [outcome] = await parts.write()
    assert outcome.status == "pending"
    error = json.loads(outcome.error or "null")
    assert (error["type"], error["message"]) == ("TimeoutError", "timed out after 0.2 s")
    # WORKFLOWS_RETRY_BACKOFF=0.02 (tests/integration/conftest.py), halved at most by jitter.
    assert outcome.retry_delay is not None and 0.01 <= outcome.retry_delay <= 0.02
    status = await wait_status(parts.store, job_id, {"pending", "running"})
    assert status["attempts"] == 1


async def test_a_requested_cancel_is_recorded_and_an_abandoned_run_records_nothing(
    parts: Parts,
) -> None:
    cancelled, abandoned = await held.queue("cancelled"), await held.queue("abandoned")
    claims = {c.id: c for c in await parts.claim(2)}
    for c in claims.values():
        parts.executor.start(c)
    await asyncio.sleep(0)  # both start running
    parts.slots.cancel_requested(claims[cancelled])
    parts.slots.abandon([claims[abandoned]])
    await until(lambda: len(parts.slots) == 0 or parts.outcomes, "the cancelled outcome")
    [outcome] = await parts.write()
    assert (outcome.id, outcome.status) == (cancelled, "cancelled")
    await until(lambda: len(parts.slots) == 0, "both runs to end")
    assert (await wait_status(parts.store, cancelled, {"cancelled"}))["error"]["type"] == (
        "ExecutionCancelledError"
    )
    # Run ahead of a write that never happened: fenced off, its claim left as it was.
    assert (await parts.store.get_status(abandoned))["status"] == "running"


async def test_cancel_all_gives_every_run_back_without_counting_the_attempt(
    parts: Parts,
) -> None:
    job_id = await held.queue("interrupted")
    [c] = await parts.claim(1)
    parts.executor.start(c)
    await asyncio.sleep(0)
    assert parts.executor.cancel_all() == 1
    await until(lambda: len(parts.slots) == 0, "the run to end")
    assert not parts.outcomes
    status = await wait_status(parts.store, job_id, {"pending"})
    assert status["attempts"] == 0
