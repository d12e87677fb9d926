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


def claim(n: int) -> Claimed:
    return Claimed(f"c{n}", "job", "j", "q", "[]", 1, 0, None, 1, None, 0, None, None, None)


async def test_claims_ahead_wait_for_a_slot_and_start_as_one_frees() -> None:
    slots = Slots(2, stuck=lambda: 0, closed=lambda: False, ahead=2)
    gate = asyncio.Event()
    started: list[str] = []

    def start(c: Claimed) -> None:
        started.append(c.id)
        slots.add(c.id, asyncio.create_task(gate.wait()), c)

    slots.start = start
    assert slots.room_ahead() == 2
    slots.run([claim(n) for n in range(4)], now=2)
    assert started == ["c0", "c1"]
    # Waiting here counts as held: the audit must not give them back, nor a bound ignore them.
    assert "c2" in slots and "c3" in slots and len(slots) == 4
    assert slots.claim("c3") is not None
    assert slots.room_ahead() == 0
    # A run whose outcome is being written frees its slot: the next claim waiting takes it.
    with slots.writing():
        assert started == ["c0", "c1", "c2"]
        assert slots.free() == 0
    # Its end frees nothing more: c2 has that slot.
    slots.remove("c0")
    assert started == ["c0", "c1", "c2"]
    # A run that ends without a write (released, say) frees its slot for the next.
    slots.remove("c1")
    assert started == ["c0", "c1", "c2", "c3"]
    assert slots.room_ahead() == 2
    gate.set()


async def test_claims_ahead_stop_while_a_bound_holds_or_claims_are_closed() -> None:
    closed = [False]
    slots = Slots(1, stuck=lambda: 0, closed=lambda: closed[0], ahead=3)
    slots.bound = 2
    assert slots.room_ahead() == 0, "flow control counts on the bound: nothing ahead"
    slots.bound = None
    closed[0] = True
    assert slots.room_ahead() == 0
    started: list[str] = []
    slots.start = lambda c: started.append(c.id)
    # A claim already made for a free slot starts even though claims closed meanwhile; those
    # made ahead wait, and are taken off to be given back.
    slots.run([claim(0), claim(1)], now=1)
    assert started == ["c0"]
    assert [c.id for c in slots.take_waiting()] == ["c1"]
    assert "c1" not in slots and slots.claim("c1") is None


def test_without_claims_ahead_nothing_waits() -> None:
    slots = Slots(2, stuck=lambda: 0, closed=lambda: False)
    assert slots.room_ahead() == 0
