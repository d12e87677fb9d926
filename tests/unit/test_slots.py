"""A worker's slots: with a bound set (while it serves a queue with a concurrency limit), never
more held than the bound, writes in flight included (roomy() in migration 0007 relies on it)."""

from __future__ import annotations

import asyncio

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
