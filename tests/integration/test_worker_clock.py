"""The worker's reading of the database's time (workflows.now() in workflow code)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows_postgres.store import PostgresStore
from workflows_worker.clock import DbClock

WEEK = 7 * 86400.0


class _LateReplies:
    """The real store, whose replies reach the clock only once ``gate`` is set."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.answered = asyncio.Event()
        self.gate = asyncio.Event()

    async def control(self, statement: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        rows = await self._store.control(statement, args)
        self.answered.set()
        await self.gate.wait()
        return rows


async def test_a_reading_under_way_when_the_clock_jumps_does_not_undo_the_jump(
    store: PostgresStore,
) -> None:
    # A test environment moves the database's clock while the heartbeat's reading of it is
    # under way: that reading is of the time before the jump. Applied after the jump, it put
    # the worker's clock back, and a workflow woken by the jump read the old time (a 7-day
    # sleep that ended 0.11 s after it began, seen under load).
    late = _LateReplies(store)
    clock = DbClock(late)  # type: ignore[arg-type]
    late.gate.set()
    await clock.refresh()
    late.gate.clear()
    late.answered.clear()
    reading = asyncio.create_task(clock.refresh())
    await late.answered.wait()
    clock.shift(WEEK)
    late.gate.set()
    await reading
    assert clock.now() - datetime.now(UTC) > timedelta(seconds=WEEK - 60)
    # The next reading, begun after the jump, is believed again.
    await clock.refresh()
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=60)
