"""The notifications part on its own: the store's listener, a real database, fake execution."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

import workflows
from tests.integration.conftest import until, wait_status
from workflows import job
from workflows.config import Settings
from workflows.records import Claimed, Registration
from workflows_postgres.store import PostgresStore
from workflows_worker.notifications import Notifications
from workflows_worker.slots import Slots
from workflows_worker.wakeup import Wakeup

QUEUE = "heard"


@job(queue=QUEUE, retries=0)
async def note(key: str) -> str:
    return key


@dataclass
class Rig:
    store: PostgresStore
    worker_id: str
    slots: Slots
    wakeup: Wakeup
    notifications: Notifications
    executed: list[Claimed] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def offers(self) -> int:
        return int(
            await self.store.pool.fetchval(
                "SELECT count(*) FROM workflows.worker_offers WHERE worker_id = $1::uuid",
                self.worker_id,
            )
        )


@pytest.fixture
async def rig(store: PostgresStore) -> AsyncIterator[Rig]:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    slots = Slots(1, stuck=lambda: 0, closed=lambda: False)
    wakeup = Wakeup()
    executed: list[Claimed] = []
    release = asyncio.Event()

    async def execute(c: Claimed) -> None:
        """The executor's part: hold the slot until the test lets go."""
        executed.append(c)
        try:
            await release.wait()
        finally:
            slots.remove(c.id)

    notifications = Notifications(
        store, worker_id, [QUEUE], Settings.from_env(), slots=slots, wakeup=wakeup, execute=execute
    )
    notifications.start()
    await until(lambda: notifications.alive, "the listener to connect")
    r = Rig(store, worker_id, slots, wakeup, notifications, executed, release)
    yield r
    release.set()
    for task in slots.tasks():
        with contextlib.suppress(Exception):
            await task
    await notifications.close()


async def test_a_job_handed_over_takes_its_slot_when_announced_and_runs_as_claimed(
    rig: Rig,
) -> None:
    await rig.notifications.offer()
    assert await rig.offers() == 1
    job_id = await note.queue("handed")
    await until(lambda: rig.executed, "the handed-over job to run")
    [c] = rig.executed
    assert (c.id, c.kind, c.lease, c.attempts) == (job_id, "job", 1, 1)
    assert job_id in rig.slots and rig.slots.free() == 0
    # The offer was used up by the handoff.
    assert await rig.offers() == 0


async def test_a_job_handed_to_a_full_worker_goes_back_uncounted(rig: Rig) -> None:
    await rig.notifications.offer()
    rig.slots.add("someone-else", asyncio.create_task(hold(rig.release)), None)
    job_id = await note.queue("too late")
    status = await wait_status(rig.store, job_id, {"pending"})
    assert status["attempts"] == 0
    assert rig.executed == []


async def test_work_on_a_queue_served_here_makes_the_pump_look(rig: Rig) -> None:
    rig.wakeup.looking = False
    # No offer stands: the enqueue announces the job on the work channel.
    await note.queue("announced")
    await until(lambda: rig.wakeup.looking, "the pump to be told to look")


async def test_a_cancel_asked_for_stops_the_run_of_that_very_claim(rig: Rig) -> None:
    job_id = await note.queue("to cancel")
    _, [c] = await rig.store.pump(rig.worker_id, [], [QUEUE], 1)
    why: list[str | None] = []

    async def run() -> None:
        try:
            await rig.release.wait()
        except asyncio.CancelledError:
            why.append(rig.slots.why_cancelled(c.id))  # what the executor reads
            raise

    rig.slots.add(c.id, asyncio.create_task(run()), c)
    assert await workflows.cancel(job_id) == "cancelling"
    await until(lambda: why, "the run to be cancelled")
    assert why == ["requested"]


async def hold(event: asyncio.Event) -> None:
    await event.wait()
