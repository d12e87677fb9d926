"""The timeouts of the runs: one loop timer per distinct timeout, not one per run.

``asyncio.timeout()`` puts a timer in the loop's heap for every run, and cancels it as nearly
every run ends in time: a tenth of a no-op job's cost on the worker. Runs of one timeout reach
their deadlines in the order they started, so each distinct timeout keeps its live runs in
start order, with one timer for the oldest; a run that ends leaves the queue at once (memory
stays bounded by the runs in progress). The run's own ``asyncio.Timeout`` is expired by the
public ``reschedule``, so it raises ``TimeoutError`` and says ``expired()`` as it always did.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict


class Deadlines:
    """The deadlines of the runs in progress on one event loop."""

    def __init__(self) -> None:
        self._queues: dict[float, _Queue] = {}

    def start(self, deadline: asyncio.Timeout, seconds: float) -> None:
        """Expire ``deadline`` (entered, with no time of its own) ``seconds`` from now,
        unless :meth:`end` came first."""
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = _Queue(seconds)
        queue.add(deadline)

    def end(self, deadline: asyncio.Timeout, seconds: float) -> None:
        """``deadline``'s run ended (before its block exits)."""
        queue = self._queues.get(seconds)
        if queue is not None:
            queue.runs.pop(deadline, None)


class _Queue:
    """Live runs of one timeout, oldest first, each with its deadline on the loop's clock."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self.runs: OrderedDict[asyncio.Timeout, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, deadline: asyncio.Timeout) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + self._seconds
        self.runs[deadline] = at
        if self._timer is None:
            self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._timer = None
        runs = self.runs
        while runs:
            deadline, at = next(iter(runs.items()))
            if at > now:
                # The oldest run still going: its own time (a run ended since this timer was
                # set leaves at most one firing early per timeout, never a run expired early).
                self._timer = loop.call_at(at, self._fire)
                return
            del runs[deadline]
            # As asyncio's own timer would: cancels the run's task, raises TimeoutError
            # out of its block.
            deadline.reschedule(now)
