"""What this worker knows of the fleet's flow-control settings.

Limits are enforced where executions start (admit() in the database), whatever a worker
knows. A worker's view serves two things:

* An activity a workflow starts on this worker's own queues may run here ahead of the write
  that admits it (eager); one a limit would hold back must not. So a worker runs ahead only on
  the queues it last saw unlimited, read every heartbeat interval. A limit set in between
  refuses the activity at its write (it then waits, pending) after it began here: that run is
  fenced off, and the activity runs again once admitted.
* A claim that came back short while a rate was spent: no notification says when the window
  frees, so the worker asks when, and looks again then instead of at its next poll.
* While it serves a queue with a concurrency limit, the worker holds no more than twice its
  concurrency (running, and waiting for their outcome to be written: ``Slots.bound``) and says
  so in its heartbeat row (``running_bound``): a limit the fleet's bounds cannot reach is then
  admitted without counting (roomy() in migration 0007). It reports the bound only once it
  keeps to it, and withdraws it before it stops keeping to it, never the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from workflows.store import WorkerStore
from workflows_worker.logs import get_logger
from workflows_worker.slots import Slots

log = get_logger(__name__)

# A look that found room but claimed nothing waits this long before the next, then twice as
# long each time, up to the poll interval.
_FIRST_BACKOFF = 0.01


class FlowView:
    def __init__(
        self,
        store: WorkerStore,
        worker_id: str,
        queues: Sequence[str],
        slots: Slots,
        look: Callable[[], None],
        poll: float = 1.0,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._slots = slots
        self._poll = poll
        self._backoff = _FIRST_BACKOFF
        # The last look this view asked for was for room there and then.
        self._probing = False
        self._queues = frozenset(queues)
        self._look = look
        # Nothing runs ahead until the settings have been read once.
        self._eager: frozenset[str] = frozenset()
        self._rated = False
        # The last claim took fewer than it asked for.
        self._short = False
        self._asking: asyncio.Task[None] | None = None

    def eager_queues(self) -> frozenset[str]:
        """This worker's queues whose activities may run ahead of their admission."""
        return self._eager

    async def refresh(self) -> None:
        (row,) = await self._store.control("flow_view", ())
        limited: list[str] = row["limited"]
        rated: list[str] = row["rated"]
        capped: list[str] = row["capped"]
        self._eager = self._queues - frozenset(limited)
        was_rated = self._rated
        self._rated = bool(row["rates"]) or bool(self._queues.intersection(rated))
        if self._rated and not was_rated and self._short:
            # A rate set since the last look may be why that claim came back short, and no
            # wakeup would say when it has room: ask now rather than wait for the poll.
            self._ask()
        await self._bound(bool(self._queues.intersection(capped)))

    async def _bound(self, wanted: bool) -> None:
        slots = self._slots
        if not wanted:
            if slots.bound is not None:
                # Withdrawn first: admissions count again before this worker may hold more.
                await self._store.control("report_running_bound", (self._worker_id, None))
                slots.bound = None
            return
        bound = 2 * slots.concurrency
        slots.bound = bound
        # Reported once kept to (a worker holding more must first let some finish), and at
        # every look: a row made again after this worker was thought dead starts with none.
        held = len(slots)
        await self._store.control(
            "report_running_bound", (self._worker_id, bound if held <= bound else None)
        )

    def claimed(self, got: int, wanted: int) -> None:
        """A claim took ``got`` of the ``wanted``: if fewer and a rate may be why, look again
        when it has room."""
        if got:
            # Progress: no reason to slow down.
            self._backoff = _FIRST_BACKOFF
            self._probing = False
        self._short = got < wanted
        if self._short and self._rated:
            self._ask()

    def _ask(self) -> None:
        if self._asking is not None and not self._asking.done():
            return
        self._asking = asyncio.get_running_loop().create_task(self._when_room())

    async def _when_room(self) -> None:
        try:
            rows = await self._store.control("rate_room_at", (sorted(self._queues),))
        except Exception as exc:
            # The poll still looks: this only makes it sooner.
            log.debug("asking when a rate has room failed: %s", exc)
            return
        seconds = rows[0]["seconds"] if rows else None
        if seconds is None:
            return
        if seconds <= 0:
            # Room, and work, now. A look it asked for that took nothing (others were quicker,
            # or the work is not this worker's to take) makes the next one wait, longer and
            # longer: never spinning.
            if self._probing:
                seconds = self._backoff
                self._backoff = min(self._backoff * 2, self._poll)
            self._probing = True
        await asyncio.sleep(float(seconds))
        self._look()

    def close(self) -> None:
        if self._asking is not None:
            self._asking.cancel()
