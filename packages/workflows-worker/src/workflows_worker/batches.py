"""Writes gathered into batches: outcomes for the pump's next round, activations written two
batches at a time, and whether such writes are going through at all."""

from __future__ import annotations

import asyncio
import time

from workflows.records import Advance, Advanced, Outcome
from workflows.store import WorkerStore
from workflows_worker.errors import UnstorableOutcomeError, first_line
from workflows_worker.logs import execution_fields, get_logger
from workflows_worker.wakeup import Wakeup

log = get_logger(__name__)

# Two, so the database writes one while this worker runs the code the other's results let go
# on, and two of the server's cores work at once. A dispatch with nothing being written sends
# two, their workflows alternating: in one batch, the workflows running here would all wait
# for the same write, and their next steps all come back in one batch again, one write at a
# time (200 workflows of 10 instant steps: 2,300 steps/s in one batch, 2,900 in two).
MAX_BATCHES = 2
# With nothing being written, a dispatch waits while activations keep arriving from the
# workflows running here (a workflow of instant steps goes on a step every pass or two of the
# event loop): one write then carries what would have been two or three in a row, each
# waiting for the one before. It ends at the second look in a row that finds nothing new, and
# after HOLD_SECONDS at most, since under load arrivals never stop by themselves.
HOLD_SECONDS = 0.003
HOLD_QUIET_LOOKS = 2

PendingOutcome = tuple[Outcome, "asyncio.Future[bool]"]
PendingAdvance = tuple[Advance, "asyncio.Future[Advanced]"]


class WriteHealth:
    """Since when every write of outcomes and activations has failed.

    A worker failing that long claims nothing more (it could not record it) and fails /healthz.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._since: float | None = None

    def ok(self) -> None:
        self._since = None

    def failed(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    @property
    def failing(self) -> bool:
        """Failing for longer than ``timeout`` (read from any thread)."""
        since = self._since
        return since is not None and time.monotonic() - since > self._timeout


class OutcomeQueue:
    """Outcomes waiting for the pump's next round, each with the future its execution awaits."""

    def __init__(self, wakeup: Wakeup) -> None:
        self._wakeup = wakeup
        self._items: list[PendingOutcome] = []

    async def record(self, outcome: Outcome) -> bool:
        """True once recorded, False if the claim was lost; raises UnstorableOutcomeError."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._items.append((outcome, future))
        self._wakeup.wake()
        # A cancel (the shutdown's) cancels only the future: the item stays queued and is
        # written all the same (whoever sets a result checks the future is not done).
        return await future

    def take(self) -> list[PendingOutcome]:
        items, self._items = self._items, []
        return items

    def put_back(self, items: list[PendingOutcome], *, ahead: bool = True) -> None:
        """Items not written this round, for the next: ahead of those that came since, or
        after them."""
        self._items = items + self._items if ahead else self._items + items

    def __bool__(self) -> bool:
        return bool(self._items)


class ActivationBatches:
    """Activations handed over by executions, written in up to ``MAX_BATCHES`` batches at once.

    A workflow's items are in one batch at a time: its next wait for that one. A batch the
    database refused for a value in it is written again item by item, so only the item still
    refused alone fails (its execution gets UnstorableOutcomeError and writes a clean error).
    """

    def __init__(
        self, store: WorkerStore, worker_id: str, wakeup: Wakeup, health: WriteHealth
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._wakeup = wakeup
        self._health = health
        self._queued: list[PendingAdvance] = []
        # Batches being written, and the workflows they are of.
        self._writing: set[asyncio.Task[None]] = set()
        self._workflows: set[str] = set()
        # Woken whenever a batch ends (see written).
        self._settled: list[asyncio.Future[None]] = []
        # A dispatch held back (see HOLD_SECONDS): since when, how many items were queued at
        # the last look, and how many looks in a row found no more.
        self._held_since: float | None = None
        self._held_size = 0
        self._quiet_looks = 0

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return not self._queued and not self._writing

    @property
    def writing(self) -> bool:
        return bool(self._writing)

    def _pending(self, workflow_id: str) -> bool:
        return workflow_id in self._workflows or any(
            pair[0].workflow.id == workflow_id for pair in self._queued
        )

    async def written(self, workflow_id: str) -> None:
        """Until nothing of the workflow is queued or being written (written, or given up)."""
        while self._pending(workflow_id):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._settled.append(future)
            await future

    async def send(self, item: Advance) -> Advanced:
        """Hand an item to the next batch and wait for what it did."""
        future: asyncio.Future[Advanced] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        self._wakeup.wake()
        # A cancel leaves the item queued, as in OutcomeQueue.record.
        return await future

    def dispatch(self, *, coalesce: bool = False) -> None:
        """Start writing what was handed over, unless MAX_BATCHES are being written.

        ``coalesce``: with nothing being written, not while items are still arriving (the
        pump's way: see HOLD_SECONDS); the wakeup is rung when it is time to look again.
        """
        if not self._queued or len(self._writing) >= MAX_BATCHES:
            return
        if coalesce and not self._writing and self._hold():
            return
        self._held_since = None
        # With nothing being written, two batches at once, their workflows alternating (see
        # MAX_BATCHES); else one batch in the free place.
        parts: list[list[PendingAdvance]] = [[], []] if not self._writing else [[]]
        side: dict[str, list[PendingAdvance]] = {}
        keep: list[PendingAdvance] = []
        busy = self._workflows
        for pair in self._queued:
            wf_id = pair[0].workflow.id
            part = side.get(wf_id)
            if part is None:
                # All of a workflow's items go in one batch, which keeps their order; none
                # while another batch has one of them.
                if wf_id in busy:
                    keep.append(pair)
                    continue
                part = side[wf_id] = parts[len(side) % len(parts)]
            part.append(pair)
        self._queued = keep
        self._workflows.update(side)
        for part in parts:
            if part:
                task = asyncio.create_task(self._write(part), name="workflows-advance")
                self._writing.add(task)

    def _hold(self) -> bool:
        """Whether to let the event loop run a pass more before writing what is queued."""
        now = time.monotonic()
        size = len(self._queued)
        if self._held_since is None:
            self._held_since, self._quiet_looks = now, 0
        elif now - self._held_since >= HOLD_SECONDS:
            return False
        elif size > self._held_size:
            self._quiet_looks = 0
        else:
            self._quiet_looks += 1
            if self._quiet_looks >= HOLD_QUIET_LOOKS:
                return False
        self._held_size = size
        # Rung after the callbacks ready now (the executions whose activations may follow).
        asyncio.get_running_loop().call_soon(self._wakeup.wake)
        return True

    async def _write(self, items: list[PendingAdvance]) -> None:
        try:
            advanced = await self._store.advance(self._worker_id, [a for a, _ in items])
            self._health.ok()
        except Exception as exc:
            if self._store.is_poison(exc):
                # One item's value, perhaps: each alone, so only that one fails.
                await self._one_by_one(items)
                return
            # Written or not (a reply lost after the commit), it is safe to send again: what
            # was written is fenced off (stale), and the audit frees what it left running.
            log.warning(
                "writing %d workflow activations failed (%s); retrying in 0.5 s",
                len(items),
                first_line(exc),
            )
            self._health.failed()
            await asyncio.sleep(0.5)
            self._queued = items + self._queued
        except BaseException:
            # Not the database's doing: the waiting executions must not hang on it.
            for _, waiter in items:
                if not waiter.done():
                    waiter.set_result(Advanced("stale"))
            raise
        else:
            for (_, waiter), result in zip(items, advanced, strict=True):
                if not waiter.done():
                    waiter.set_result(result)
        finally:
            for item, _ in items:
                self._workflows.discard(item.workflow.id)
            task = asyncio.current_task()
            if task is not None:
                self._writing.discard(task)
            settled, self._settled = self._settled, []
            for future in settled:
                if not future.done():
                    future.set_result(None)
            self._wakeup.wake()

    async def _one_by_one(self, items: list[PendingAdvance]) -> None:
        for n, (item, waiter) in enumerate(items):
            try:
                (result,) = await self._store.advance(self._worker_id, [item])
            except Exception as exc:
                if not self._store.is_poison(exc):
                    # Not this item's doing: it and the rest go with the next batch.
                    self._queued = items[n:] + self._queued
                    return
                log.warning(
                    "the database refused an activation of workflow %s: %s",
                    item.workflow.id,
                    first_line(exc),
                    extra=execution_fields(item.workflow),
                )
                if not waiter.done():
                    waiter.set_exception(UnstorableOutcomeError(first_line(exc)))
                continue
            if not waiter.done():
                waiter.set_result(result)
