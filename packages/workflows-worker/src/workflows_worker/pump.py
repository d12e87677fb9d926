"""The claim-and-record loop: outcomes written and free slots filled, one statement a round."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from workflows.config import Settings
from workflows.records import Claimed
from workflows.store import WorkerStore
from workflows_worker.batches import ActivationBatches, OutcomeQueue, PendingOutcome, WriteHealth
from workflows_worker.errors import UnstorableOutcomeError, first_line
from workflows_worker.logs import get_logger
from workflows_worker.slots import Slots
from workflows_worker.wakeup import Wakeup

log = get_logger(__name__)


class Pump:
    """Until stopped (and drained): record finished outcomes and claim into free slots.

    Each round is one statement for everything that finished since the last, so under load
    outcomes and claims go in batches; an idle worker runs nothing until woken by a
    notification, a finished execution or its poll tick.

    Claims go to ``slots``, which starts them (or keeps those claimed ahead of free slots
    until one frees). Collaborators: ``holds`` says whether a workflow is held in memory
    here (an outcome resolving it may claim it straight back); ``versions`` the newest version
    of each workflow this worker's code has; ``on_idle`` is called on each idle round (to
    offer this worker for handoffs); ``claimed`` with how many a claim took of how many
    it asked for.

    One round at a time. Two in flight, each claiming half the free slots so that one is
    written while the other's claims run, gained nothing measurable on two cores: half-size
    statements cost the server more per execution (a statement's fixed cost is about that of
    four or five rows), and both processes were then busy. Only claims held beyond the free
    slots (``ahead``) let the two work at once.
    """

    def __init__(
        self,
        store: WorkerStore,
        worker_id: str,
        queues: Sequence[str],
        settings: Settings,
        *,
        slots: Slots,
        outcomes: OutcomeQueue,
        activations: ActivationBatches,
        wakeup: Wakeup,
        health: WriteHealth,
        holds: Callable[[str | None], bool],
        versions: Callable[[], dict[str, int]],
        stopping: Callable[[], bool],
        burst: bool = False,
        on_idle: Callable[[], Awaitable[None]] | None = None,
        claimed: Callable[[int, int], None] | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._queues = list(queues)
        self._poll = settings.worker_poll_interval
        self._slots = slots
        self._outcomes = outcomes
        self._activations = activations
        self._wakeup = wakeup
        self._health = health
        self._holds = holds
        self._versions = versions
        self._stopping = stopping
        self._burst = burst
        self._on_idle = on_idle
        self._claimed = claimed

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup
        next_poll = loop.time()
        backoff = 0.1
        while True:
            wakeup.clear()
            stopping = self._stopping()
            if stopping and self._slots.ahead:
                await self._give_back(self._slots.take_waiting())
            batch = self._outcomes.take()
            self._activations.dispatch(coalesce=True)
            now = loop.time()
            if now >= next_poll:
                wakeup.looking = True
                next_poll = now + self._poll
            # Claimed ahead: into the slots free now (the writes that closed them may be back).
            self._slots.fill()
            free = self._slots.free()
            # Outcomes that resolve a workflow held here may claim it straight back: keep
            # their slots for that.
            resumable = sum(
                1 for o, _ in batch if o.status != "pending" and self._holds(o.parent_id)
            )
            now_wanted = max(free - resumable, 0) if wakeup.looking or batch else 0
            want = now_wanted + self._slots.room_ahead() if now_wanted or batch else 0
            if not batch and not want:
                if stopping and not self._slots and self._activations.idle:
                    return
                if self._burst and not self._slots and not self._outcomes:
                    try:
                        if not await self._store.any_runnable(self._queues):
                            return
                    except Exception as exc:
                        if not self._store.is_transient(exc):
                            raise
                    wakeup.looking = True
                if self._on_idle is not None and self._idle(stopping):
                    await self._on_idle()
                await wakeup.wait(max(next_poll - loop.time(), 0.0))
                continue
            wakeup.looking = False
            try:
                with self._slots.claiming(want):
                    recorded, claimed = await self._store.pump(
                        self._worker_id,
                        [o for o, _ in batch],
                        self._queues,
                        want,
                        self._versions(),
                        resume_sticky=not stopping,
                    )
                backoff = 0.1
                self._health.ok()
            except Exception as exc:
                if batch and self._store.is_poison(exc):
                    # One item's value, perhaps (or the claim's): each alone, without the
                    # claim, so only an item still refused fails.
                    await self._record_one_by_one(batch, not stopping)
                    wakeup.looking = True
                    continue
                if not self._store.is_transient(exc):
                    log.exception("database round failed")
                else:
                    log.warning(
                        "database round failed (%s); retrying in %.1f s", first_line(exc), backoff
                    )
                self._health.failed()
                self._outcomes.put_back(batch)
                wakeup.looking = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            for outcome, future in batch:
                if not future.done():
                    future.set_result(outcome.id in recorded)
            # A full claim means there may be more: look again as soon as slots free up. (A
            # notification that came in meanwhile has set it already: never clear it here.)
            if want and len(claimed) == want:
                wakeup.looking = True
            if want and self._claimed is not None:
                # Fewer than asked: nothing more, or a limit (a spent rate says when to look).
                self._claimed(len(claimed), want)
            self._slots.run(claimed, now_wanted)

    async def _give_back(self, claims: list[Claimed]) -> None:
        """Claims that waited here for a slot, back to pending (never run: uncounted), in one
        statement."""
        if not claims:
            return
        try:
            await self._store.release_many(claims, self._worker_id)
        except Exception as exc:
            if not self._store.is_transient(exc):
                raise
            # Still running here as far as the database knows: recovered as this worker's
            # once it is gone.
            log.warning("giving back %d claims failed (%s)", len(claims), first_line(exc))

    def _idle(self, stopping: bool) -> bool:
        return (
            not self._burst
            and not stopping
            and not self._slots
            and not self._outcomes
            and self._activations.idle
            # Threads stuck in calls past their timeout: a job handed over would go back.
            and self._slots.free() > 0
        )

    async def _record_one_by_one(self, batch: list[PendingOutcome], resume_sticky: bool) -> None:
        """Record a batch the database refused item by item: whatever it still refuses alone
        fails its own execution (the waiting task records a clean error instead)."""
        for outcome, future in batch:
            try:
                recorded, claimed = await self._store.pump(
                    self._worker_id,
                    [outcome],
                    self._queues,
                    0,
                    self._versions(),
                    resume_sticky=resume_sticky,
                )
            except Exception as exc:
                if self._store.is_poison(exc):
                    log.warning(
                        "the database refused the outcome of %s: %s",
                        outcome.id,
                        first_line(exc),
                        extra={"execution_id": outcome.id},
                    )
                    if not future.done():
                        future.set_exception(UnstorableOutcomeError(first_line(exc)))
                else:
                    # Not this item's doing: it goes with the next round.
                    self._outcomes.put_back([(outcome, future)], ahead=False)
                continue
            if not future.done():
                future.set_result(outcome.id in recorded)
            self._slots.run(claimed, len(claimed))
