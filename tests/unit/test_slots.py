"""A worker's slots: with a bound set (while it serves a queue with a concurrency limit), never
more held than the bound, writes in flight included (roomy() in migration 0007 relies on it)."""

from __future__ import annotations

import asyncio

from workflows.records import Claimed
from workflows_worker.slots import Slots


async def test_slots_of_writes_in_flight_are_free_up_to_the_bound() -> None:
    slots = Slots(2, stuck=lambda: 0, closed=lambda: False)
    slots.bound = 4
    gate = asyncio.Event()
    tasks = []

    def start(n: int) -> None:
        for _ in range(n):
            task = asyncio.create_task(gate.wait())
            tasks.append(task)
            slots.add(f"e{len(tasks)}", task, None)

    start(2)
    assert slots.free() == 0
    # Both wait for their outcome to be written: their slots are free again...
    with slots.writing(), slots.writing():
        assert slots.free() == 2
        start(2)
        # ... but four held (two running, two being written) is all one worker may hold.
        assert slots.free() == 0
        with slots.writing(), slots.writing():
            assert slots.free() == 0
            # Without a bound, writes in flight free their slots whatever is held.
            slots.bound = None
            assert slots.free() == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert slots.free() == 2


async def test_a_run_cancelled_before_it_ever_ran_frees_its_slot() -> None:
    # The executor's tasks free their own slot once they run (frees_itself): one abandoned
    # or cancelled before its first step never runs that code, and must not hold it forever.
    slots = Slots(3, stuck=lambda: 0, closed=lambda: False)
    ran: list[str] = []

    async def run(name: str) -> None:
        ran.append(name)
        slots.remove(name)

    claims = {name: _claim(name) for name in ("a", "b", "c")}
    tasks = {}
    for name, claim in claims.items():
        tasks[name] = asyncio.create_task(run(name))
        slots.add(name, tasks[name], claim, frees_itself=True)
    assert slots.free() == 0
    slots.abandon([claims["a"]])
    slots.cancel_requested(claims["b"])
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    await asyncio.sleep(0)  # the done callbacks run in the loop's next pass
    assert ran == ["c"]
    assert slots.free() == 3 and len(slots) == 0
    # What the cancelled ones were cancelled for is forgotten with their slots.
    assert slots.why_cancelled("a") is None and slots.why_cancelled("b") is None


async def test_cancel_all_frees_runs_that_never_started() -> None:
    slots = Slots(2, stuck=lambda: 0, closed=lambda: False)
    gate = asyncio.Event()
    for name in ("a", "b"):
        slots.add(name, asyncio.create_task(gate.wait()), _claim(name), frees_itself=True)
    tasks = slots.tasks()
    assert slots.cancel_all() == 2
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert len(slots) == 0 and slots.free() == 2


def _claim(execution_id: str) -> Claimed:
    return Claimed(
        id=execution_id,
        kind="job",
        name="app:fn",
        queue="default",
        args="{}",
        attempts=1,
        max_retries=0,
        timeout=None,
        lease=1,
        version=None,
        wakeups=0,
        parent_id=None,
        deadline=None,
        pickup_latency=None,
    )
