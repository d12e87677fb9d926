"""The database's time, as this worker reads it.

``workflows.now()`` in workflow code records the time the first time it is reached; the time
is the database's (the clock every timer, delay and deadline runs on), read as this process's
clock plus the difference last measured, every heartbeat interval. A reading is never a query.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows.store import WorkerStore


class DbClock:
    def __init__(self, store: WorkerStore) -> None:
        self._store = store
        self._offset = timedelta(0)
        # Bumped by each shift(): a reading taken before a shift is older than it.
        self._shifts = 0

    async def refresh(self) -> None:
        shifts = self._shifts
        before = datetime.now(UTC)
        (row,) = await self._store.control("db_now", ())
        after = datetime.now(UTC)
        if shifts != self._shifts:
            # The database's clock was moved while this reading was under way: it may be of
            # the time before the move, and must not undo the shift.
            return
        # The server read its clock somewhere in the round trip: take the middle.
        self._offset = row["now"] - (before + (after - before) / 2)

    def shift(self, seconds: float) -> None:
        """The database's clock was just moved ``seconds`` on (a test environment's jump):
        move this one too, at once, before any workflow code can read it."""
        self._shifts += 1
        self._offset += timedelta(seconds=seconds)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset
