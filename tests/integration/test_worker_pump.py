"""The pump on its own: claiming into free slots and recording outcomes, with a real store.

What the pump starts is played by the test: each claim "runs" in a task of its own that queues
its outcome, as the executor would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from tests.integration.conftest import until, wait_status
from workflows import job
from workflows.config import Settings
from workflows.records import Claimed, Outcome, Registration
from workflows_postgres.store import PostgresStore
from workflows_worker.batches import ActivationBatches, OutcomeQueue, WriteHealth
from workflows_worker.errors import UnstorableOutcomeError
from workflows_worker.pump import Pump
from workflows_worker.slots import Slots
from workflows_worker.wakeup import Wakeup

QUEUE = "pump"


@job(queue=QUEUE, retries=0)
async def echo(key: str) -> str:
    return key


@dataclass
class Rig:
    store: PostgresStore
    worker_id: str
    slots: Slots
    outcomes: OutcomeQueue
    wakeup: Wakeup
    stopping: list[bool]
    started: list[Claimed] = field(default_factory=list)
    running: int = 0
    most_running: int = 0

    def pump(self, *, burst: bool = False, start: Callable[[Claimed], None] | None = None) -> Pump:
        wakeup, health = self.wakeup, WriteHealth(30)
        self.slots.start = start or self.run
        return Pump(
            self.store,
            self.worker_id,
            [QUEUE],
            Settings.from_env(),
            slots=self.slots,
            outcomes=self.outcomes,
            activations=ActivationBatches(self.store, self.worker_id, wakeup, health),
            wakeup=wakeup,
            health=health,
            holds=lambda workflow_id: False,
            versions=dict,
            stopping=lambda: self.stopping[0],
            burst=burst,
        )

    def run(self, c: Claimed) -> None:
        """The executor's part: run ``c`` in a slot and queue its outcome."""
        self.started.append(c)
        self.slots.add(c.id, asyncio.create_task(self._execute(c)), c)

    async def _execute(self, c: Claimed) -> None:
        try:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            await asyncio.sleep(0.01)
            self.running -= 1
            with self.slots.writing():
                await self.outcomes.record(Outcome(c.id, c.lease, "completed", result=c.args))
        finally:
            self.slots.remove(c.id)
            self.wakeup.wake()

    def stop(self) -> None:
        self.stopping[0] = True
        self.wakeup.wake()


@pytest.fixture
async def rig(store: PostgresStore) -> AsyncIterator[Rig]:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    stopping = [False]
    slots = Slots(2, stuck=lambda: 0, closed=lambda: stopping[0])
    wakeup = Wakeup()
    yield Rig(store, worker_id, slots, OutcomeQueue(wakeup), wakeup, stopping)


async def test_the_pump_claims_into_free_slots_only_and_records_every_outcome(rig: Rig) -> None:
    ids = [await echo.queue(f"k{n}") for n in range(5)]
    task = asyncio.create_task(rig.pump().run())
    try:
        for execution_id in ids:
            await wait_status(rig.store, execution_id, {"completed"})
    finally:
        rig.stop()
        # Stopping with nothing in flight or to record: the pump returns by itself.
        await asyncio.wait_for(task, 10)
    assert sorted(c.id for c in rig.started) == sorted(ids)
    # Never more code running than slots (those waiting for their write run none).
    assert rig.most_running <= 2
    statuses = [await rig.store.get_status(i) for i in ids]
    assert [s["result"] for s in statuses] == [{"args": [f"k{n}"], "kwargs": {}} for n in range(5)]


async def test_a_burst_pump_returns_once_its_queues_are_empty(rig: Rig) -> None:
    ids = [await echo.queue(f"b{n}") for n in range(3)]
    await asyncio.wait_for(rig.pump(burst=True).run(), 20)
    assert [(await rig.store.get_status(i))["status"] for i in ids] == ["completed"] * 3


async def test_an_outcome_the_database_refuses_fails_alone_and_the_rest_is_recorded(
    rig: Rig,
) -> None:
    good, bad = await echo.queue("good"), await echo.queue("bad")
    _, claimed = await rig.store.pump(rig.worker_id, [], [QUEUE], 2)
    claims = {c.id: c for c in claimed}
    # Text the database cannot store (a NUL character): a value of this outcome's own.
    refused = Outcome(bad, claims[bad].lease, "completed", result='"\x00"')
    fine = Outcome(good, claims[good].lease, "completed", result='"fine"')
    recording = [asyncio.create_task(rig.outcomes.record(o)) for o in (refused, fine)]
    task = asyncio.create_task(rig.pump().run())
    try:
        results = await asyncio.wait_for(asyncio.gather(*recording, return_exceptions=True), 10)
    finally:
        rig.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
    assert isinstance(results[0], UnstorableOutcomeError)
    assert results[1] is True
    assert (await rig.store.get_status(good))["result"] == "fine"
    # Left as it was: its execution records a clean error instead (see the executor).
    assert (await rig.store.get_status(bad))["status"] == "running"


async def test_an_activity_ends_only_with_its_step_whatever_its_outcome_names(rig: Rig) -> None:
    # Outcomes that name no workflow go through the lighter statement, which resolves no step:
    # an activity ended there would leave its workflow waiting for the step forever. So an
    # outcome that names none for a row that has one is not recorded, as with a lost claim.
    wf, act = str(uuid.uuid4()), str(uuid.uuid4())
    async with rig.store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, status)"
            " VALUES ($1::uuid, 'workflow', 'tests.flow', 'elsewhere', '[]', 0, 'waiting')",
            wf,
        )
        await conn.execute(
            "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries,"
            " parent_id, parent_seq) VALUES ($1::uuid, 'activity', 'tests.step', $2, '[]', 0,"
            " $3::uuid, 1)",
            act,
            QUEUE,
            wf,
        )
        await conn.execute(
            "INSERT INTO workflows.workflow_steps (workflow_id, seq, kind, name, status,"
            " execution_id) VALUES ($1::uuid, 1, 'activity', 'tests.step', 'scheduled', $2::uuid)",
            wf,
            act,
        )
    _, (claim,) = await rig.store.pump(rig.worker_id, [], [QUEUE], 1)
    assert (claim.id, claim.parent_id) == (act, wf)

    async def step() -> str:
        value: str = await rig.store.pool.fetchval(
            "SELECT status FROM workflows.workflow_steps WHERE workflow_id = $1::uuid", wf
        )
        return value

    unnamed = Outcome(act, claim.lease, "completed", result="1")
    recorded, _ = await rig.store.pump(rig.worker_id, [unnamed], [QUEUE], 0)
    assert recorded == set()
    assert ((await rig.store.get_status(act))["status"], await step()) == ("running", "scheduled")
    named = Outcome(act, claim.lease, "completed", result="1", parent_id=wf)
    recorded, _ = await rig.store.pump(rig.worker_id, [named], [QUEUE], 0)
    assert recorded == {act}
    assert ((await rig.store.get_status(act))["status"], await step()) == ("completed", "completed")


async def test_a_pump_stops_claiming_once_stopping_but_records_what_finishes(rig: Rig) -> None:
    gate = asyncio.Event()
    held: list[Claimed] = []

    def start(c: Claimed) -> None:
        held.append(c)

        async def run() -> None:
            try:
                await gate.wait()
                with rig.slots.writing():
                    await rig.outcomes.record(Outcome(c.id, c.lease, "completed", result="1"))
            finally:
                rig.slots.remove(c.id)
                rig.wakeup.wake()

        rig.slots.add(c.id, asyncio.create_task(run()), c)

    first = await echo.queue("first")
    task = asyncio.create_task(rig.pump(start=start).run())
    await until(lambda: held, "the first claim")
    rig.stop()
    later = await echo.queue("later")
    gate.set()
    await asyncio.wait_for(task, 10)
    assert (await rig.store.get_status(first))["status"] == "completed"
    assert (await rig.store.get_status(later))["status"] == "pending"
    assert [c.id for c in held] == [first]
