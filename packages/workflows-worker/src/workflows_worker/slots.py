"""What runs on this worker, and how many more executions it may start: the one place that says."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from workflows.records import Claimed


class Slots:
    """The executions running here (a task each, by id) and the slots left for new ones.

    ``stuck``: threads held by plain ``def`` calls past their timeout (each keeps its slot until
    the call returns). ``closed``: no new claims at all (the worker stops, or its writes keep
    failing: it would claim what it could not record).

    ``ahead``: how many claims may wait here for a slot (WORKFLOWS_WORKER_PREFETCH). Claimed
    ahead, they start as slots free up, while the round that records the outcomes freeing them
    is still being written: so the database and the worker's code work at once, not by turns.
    ``start`` runs a claim in a slot (the executor's).
    """

    def __init__(
        self,
        concurrency: int,
        *,
        stuck: Callable[[], int],
        closed: Callable[[], bool],
        ahead: int = 0,
    ) -> None:
        self.concurrency = concurrency
        self.ahead = ahead
        self.start: Callable[[Claimed], None] | None = None
        # Claimed ahead, in claim order, waiting for a slot.
        self._waiting: deque[Claimed] = deque()
        # The most executions held at once (running and being written), when set.
        self.bound: int | None = None
        self._stuck = stuck
        self._closed = closed
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Claims by id (a cancel announced is checked against its lease); a job handed over
        # has its slot before its claim is read, so it may have none yet.
        self._claims: dict[str, Claimed] = {}
        # Executions waiting for their outcome (or activation) to be written.
        self._writing = 0
        # A class, not a generator: entered once or twice per execution.
        self._writing_block = _Writing(self)
        # Slots asked for by the claim being run now (a handoff must not take them).
        self._claiming = 0
        # Why a task was cancelled: a cancel asked for, or run ahead of a write that failed.
        self._cancel_requested: set[str] = set()
        self._abandoned: set[str] = set()
        # Cancelled while waiting for a slot: started only to record that.
        self._cancel_first: set[str] = set()

    # ---- counting -------------------------------------------------------------------------

    def capacity(self) -> int:
        """Executions this worker can run at once: its concurrency, less the stuck threads."""
        return self.concurrency - self._stuck()

    def free(self) -> int:
        """Slots free for new claims."""
        if self._closed():
            return 0
        # Executions waiting for their outcome to be written run no code: their slots are
        # free (so under load claims go with the outcomes that free them). Bounded, no more
        # than ``bound`` held in all, while flow control counts on it (flow.py).
        free = self.capacity() - len(self._tasks) + self._writing
        if self.bound is not None:
            free = min(free, self.bound - len(self._tasks))
        return max(free, 0)

    def room_ahead(self) -> int:
        """Claims that may be taken now beyond the free slots, to wait here for one."""
        # Not while flow control counts on the bound: what waits here is held too.
        if self.ahead == 0 or self.bound is not None or self._closed():
            return 0
        return max(self.ahead - len(self._waiting), 0)

    def run(self, claims: Sequence[Claimed], now: int) -> None:
        """Start the first ``now`` of ``claims`` (claimed for free slots) whatever has changed
        since, and the rest (claimed ahead) as slots free up."""
        start = self.start
        assert start is not None
        for c in claims[:now]:
            start(c)
        for c in claims[now:]:
            self._claims[c.id] = c
            self._waiting.append(c)
        self.fill()

    def fill(self) -> None:
        """Start what waits for a slot in the slots free now."""
        waiting = self._waiting
        if not waiting:
            return
        start = self.start
        assert start is not None
        while waiting and self.free() > 0:
            start(waiting.popleft())

    def waiting(self) -> int:
        """Claims made ahead that wait for a slot now (read by the metrics' thread too)."""
        return len(self._waiting)

    def take_waiting(self) -> list[Claimed]:
        """Every claim still waiting for a slot, taken off (the worker stops: they go back)."""
        taken = list(self._waiting)
        self._waiting.clear()
        for c in taken:
            self._claims.pop(c.id, None)
        return taken

    def free_for_handoff(self) -> int:
        """Free slots a claim in progress has not asked for already."""
        return self.free() - self._claiming

    def eager(self) -> int:
        """Activities an activation may claim for this worker in its own write."""
        # The slot of what led here passes to the first activity; more only if free.
        return max(1, self.capacity() - len(self._tasks) + 1)

    def writing(self) -> _Writing:
        """While the execution calling it waits for a write (its slot counts as free)."""
        return self._writing_block

    @contextlib.contextmanager
    def claiming(self, wanted: int) -> Iterator[None]:
        self._claiming = wanted
        try:
            yield
        finally:
            self._claiming = 0

    # ---- the running table ------------------------------------------------------------------

    def add(
        self,
        execution_id: str,
        task: asyncio.Task[None],
        claim: Claimed | None,
        *,
        frees_itself: bool = False,
    ) -> None:
        """``frees_itself``: the task's code removes it, however it ends once it started
        (the executor's); only a cancel before it ever ran needs the watch (see _cancel)."""
        self._tasks[execution_id] = task
        if claim is not None:
            self._claims[execution_id] = claim
        if not frees_itself:
            self._watch(execution_id, task)

    def _watch(self, execution_id: str, task: asyncio.Task[None]) -> None:
        # A task cancelled before it ever ran (abandoned at once) never reaches the code that
        # frees its slot.
        task.add_done_callback(lambda done: self.ended(execution_id, done))

    def _cancel(self, execution_id: str, task: asyncio.Task[None]) -> None:
        # Watched only now: a callback on every task cost a loop callback per execution.
        self._watch(execution_id, task)
        task.cancel()

    def ended(self, execution_id: str, task: asyncio.Task[None]) -> None:
        """``task`` ended: free its slot, unless another task holds it by now."""
        if self._tasks.get(execution_id) is task:
            self.remove(execution_id)

    def bind(self, claim: Claimed) -> None:
        """The claim of a slot taken before it was known (a job handed over)."""
        self._claims[claim.id] = claim

    def remove(self, execution_id: str) -> None:
        self._tasks.pop(execution_id, None)
        self._claims.pop(execution_id, None)
        self._cancel_requested.discard(execution_id)
        self._abandoned.discard(execution_id)
        self.fill()

    def __contains__(self, execution_id: object) -> bool:
        # Claimed ahead counts: the audit must not give back what waits here for a slot.
        return execution_id in self._tasks or (
            bool(self._waiting) and any(c.id == execution_id for c in self._waiting)
        )

    def __len__(self) -> int:
        return len(self._tasks) + len(self._waiting)

    def claim(self, execution_id: str) -> Claimed | None:
        return self._claims.get(execution_id)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def cancel_all(self) -> int:
        """Cancel every run (the shutdown's grace is over); how many there were."""
        running = list(self._tasks.items())
        for execution_id, task in running:
            self._cancel(execution_id, task)
        return len(running)

    # ---- stopping one ---------------------------------------------------------------------

    def cancel_requested(self, claim: Claimed) -> None:
        """Cancel ``claim``'s run, if it still runs under that very claim."""
        if any(c is claim for c in self._waiting):
            # Started now, past the free slots: it records its cancel and runs no code.
            self._waiting.remove(claim)
            self._cancel_requested.add(claim.id)
            self._cancel_first.add(claim.id)
            assert self.start is not None
            self.start(claim)
            return
        task = self._tasks.get(claim.id)
        if task is not None and self._claims.get(claim.id) is claim:
            self._cancel_requested.add(claim.id)
            self._cancel(claim.id, task)

    def abandon(self, claims: list[Claimed]) -> None:
        """Stop activities run ahead of a write that did not happen (nothing records them)."""
        for c in claims:
            task = self._tasks.get(c.id)
            if task is not None and not task.done():
                self._abandoned.add(c.id)
                self._cancel(c.id, task)

    def cancelled_waiting(self, execution_id: str) -> bool:
        """A cancel came while the claim waited for a slot (see cancel_requested)."""
        if execution_id in self._cancel_first:
            self._cancel_first.discard(execution_id)
            return True
        return False

    def why_cancelled(self, execution_id: str) -> str | None:
        """``abandoned``, ``requested``, or None (the shutdown's cancel)."""
        if execution_id in self._abandoned:
            return "abandoned"
        if execution_id in self._cancel_requested:
            return "requested"
        return None


class _Writing:
    """The block of :meth:`Slots.writing` (re-entrant: a count)."""

    __slots__ = ("_slots",)

    def __init__(self, slots: Slots) -> None:
        self._slots = slots

    def __enter__(self) -> None:
        self._slots._writing += 1
        self._slots.fill()

    def __exit__(self, *exc: object) -> None:
        self._slots._writing -= 1
