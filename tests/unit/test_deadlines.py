"""The worker's run timeouts: each run's asyncio.Timeout expires at its own deadline, runs of
one timeout share a timer, and a run that ended is never expired (nor kept)."""

from __future__ import annotations

import asyncio

import pytest

from workflows_worker.deadlines import Deadlines


async def _run(deadlines: Deadlines, seconds: float, gate: asyncio.Event) -> str:
    deadline = asyncio.Timeout(None)
    try:
        async with deadline:
            deadlines.start(deadline, seconds)
            try:
                await gate.wait()
            finally:
                deadlines.end(deadline, seconds)
    except TimeoutError:
        assert deadline.expired()
        return "timed out"
    assert not deadline.expired()
    return "ended"


async def test_a_run_past_its_timeout_raises_timeout_error_and_others_are_left_alone() -> None:
    deadlines = Deadlines()
    never, soon = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = asyncio.create_task(_run(deadlines, 0.05, never))
    # Same timeout, ends in time; a longer timeout, never ends by itself.
    quick = asyncio.create_task(_run(deadlines, 0.05, soon))
    patient = asyncio.create_task(_run(deadlines, 60.0, never))
    await asyncio.sleep(0)
    soon.set()
    assert await quick == "ended"
    assert await slow == "timed out"
    # Not before its deadline (the loop's clock, as asyncio.timeout reads it).
    assert loop.time() - started >= 0.05
    assert not patient.done()
    patient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await patient
    # Nothing kept of runs that ended, however they ended.
    assert all(not q.runs for q in deadlines._queues.values())


async def test_runs_of_one_timeout_expire_in_order_behind_one_that_ended() -> None:
    deadlines = Deadlines()
    never, done = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_run(deadlines, 0.05, done))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(_run(deadlines, 0.05, never))
    await asyncio.sleep(0.01)
    third = asyncio.create_task(_run(deadlines, 0.05, never))
    await asyncio.sleep(0)
    # The oldest ends: the timer set for it finds the next still in time, and waits for it.
    done.set()
    assert await first == "ended"
    assert not second.done() and not third.done()
    assert await second == "timed out"
    assert not third.done()
    assert await third == "timed out"


async def test_a_task_cancelled_while_its_deadline_passes_is_cancelled_not_timed_out() -> None:
    deadlines = Deadlines()
    never = asyncio.Event()
    run = asyncio.create_task(_run(deadlines, 10.0, never))
    await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert not deadlines._queues[10.0].runs
