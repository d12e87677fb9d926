"""What wakes the claim-and-record loop: something to record, or work to look for."""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """The pump's doorbell, rung by every part that has something for it.

    ``wake``: something finished (an outcome to record, a slot freed, a batch written).
    ``look``: work may be waiting (a notification, a timer fired, a peer recovered), so the
    next round claims even with nothing to record.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        # Look at first: whatever was enqueued before this worker started.
        self.looking = True

    def wake(self) -> None:
        self._event.set()

    def look(self) -> None:
        self.looking = True
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, seconds: float) -> None:
        """Until rung, or ``seconds`` passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
