"""What the worker hears: work announced, cancels asked for, jobs handed over; and its offers.

Notifications are hints (any role that can connect may send one): a handoff is read back from
the table before anything runs, a cancel checked against the claim it names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from workflows.config import Settings
from workflows.records import Claimed
from workflows.store import Listener, WorkerStore
from workflows_worker.errors import first_line
from workflows_worker.logs import execution_fields, get_logger
from workflows_worker.slots import Slots
from workflows_worker.wakeup import Wakeup

log = get_logger(__name__)


class Notifications:
    """Reacts to the store's listener, and offers this worker for handoffs while it is idle.

    ``execute`` runs a claim in the slot the calling task holds (a job handed over takes its
    slot as soon as it is announced, before its claim is read).
    """

    def __init__(
        self,
        store: WorkerStore,
        worker_id: str,
        queues: Sequence[str],
        settings: Settings,
        *,
        slots: Slots,
        wakeup: Wakeup,
        execute: Callable[[Claimed], Awaitable[None]],
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._queues = list(queues)
        self._queue_set = frozenset(queues)
        self._poll = settings.worker_poll_interval
        self._slots = slots
        self._wakeup = wakeup
        self._execute = execute
        # An idle worker renews its offer at _offer_due (loop time; 0: now, when next idle).
        self._offer_due = 0.0
        # Give-backs and cancel checks under way (waited for at shutdown).
        self._background: set[asyncio.Task[None]] = set()
        self._listener: Listener = store.listener(
            worker_id,
            on_work=self._on_work,
            on_cancel=self._on_cancel,
            on_start=self._on_start,
            on_connected=self._on_connected,
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """Connected and listening (read from the metrics server's thread)."""
        return self._listener.alive

    def start(self) -> None:
        self._task = asyncio.create_task(self._listener.run(), name="workflows-listen")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._background:
            # Jobs being given back: else they wait for a peer to recover them.
            await asyncio.wait(self._background, timeout=5)
        with contextlib.suppress(Exception):
            await self._listener.close()

    # ---- offers ---------------------------------------------------------------------------

    async def offer(self) -> None:
        """Offer this idle worker for the next job of its queues, renewed every poll.

        It lapses after two polls and a second, so a worker that stops renewing (paused, or its
        event loop stuck) stops getting jobs handed over within seconds; a dead one holds no
        session, so its offers are no good.
        """
        loop = asyncio.get_running_loop()
        if not self._listener.alive or loop.time() < self._offer_due:
            return
        self._offer_due = loop.time() + self._poll
        try:
            await self._listener.offer(self._queues, 2 * self._poll + 1)
        except Exception as exc:
            if not self._store.is_transient(exc):
                raise
            # Not registered just now (a peer declared it dead): the next beat registers again.
            log.debug("offering this worker failed (%s)", first_line(exc))

    async def withdraw(self) -> None:
        """No more handoffs (the worker stops): jobs handed over from now on go back."""
        try:
            await self._listener.withdraw()
        except Exception as exc:
            if not self._store.is_transient(exc):
                raise

    # ---- the listener's callbacks ---------------------------------------------------------

    def _on_connected(self) -> None:
        self._offer_due = 0.0
        # Whatever was announced while we were not listening: look now.
        self._wakeup.look()

    def _on_work(self, queue: str) -> None:
        if queue in self._queue_set:
            self._wakeup.look()

    def _on_start(self, execution_id: str) -> None:
        if execution_id in self._slots:
            return
        # The offer is used up: make another when idle again.
        self._offer_due = 0.0
        if self._slots.free_for_handoff() > 0:
            # The slot is taken now, while the claim is read.
            task = asyncio.create_task(
                self._take_handoff(execution_id), name=f"workflows-job-{execution_id}"
            )
            self._slots.add(execution_id, task, None)
            return
        # Handed over while this worker filled up or began to stop: back to any worker.
        self._in_background(self._give_back(execution_id), f"workflows-give-back-{execution_id}")

    def _on_cancel(self, execution_id: str) -> None:
        c = self._slots.claim(execution_id)
        if c is not None:
            self._in_background(self._check_cancel(c), f"workflows-cancel-{c.id}")

    # ---- what they start ------------------------------------------------------------------

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _take_handoff(self, execution_id: str) -> None:
        try:
            c = await self._listener.take_handoff(execution_id)
        except asyncio.CancelledError:
            self._slots.remove(execution_id)
            raise
        except Exception as exc:
            if not self._store.is_transient(exc):
                self._slots.remove(execution_id)
                raise
            # If it was real, it stays running here unknown: the audit gives it back.
            log.warning(
                "reading the job handed over as %s failed (%s)",
                execution_id,
                first_line(exc),
                extra={"execution_id": execution_id},
            )
            c = None
        if c is None:
            self._slots.remove(execution_id)
            self._wakeup.wake()
            return
        self._slots.bind(c)
        await self._execute(c)

    async def _give_back(self, execution_id: str) -> None:
        try:
            # Fenced on this worker and the handoff's lease: a forged id releases nothing.
            await self._store.release_id(execution_id, 1, self._worker_id)
        except Exception as exc:
            if not self._store.is_transient(exc):
                raise
            # Still running here as far as the database knows: the audit releases it.
            log.warning(
                "handing back %s failed (%s)",
                execution_id,
                first_line(exc),
                extra={"execution_id": execution_id},
            )

    async def _check_cancel(self, c: Claimed) -> None:
        try:
            requested = await self._store.cancel_requested(c, self._worker_id)
        except Exception as exc:
            if not self._store.is_transient(exc):
                raise
            log.warning(
                "checking a cancel of %s failed (%s)",
                c.id,
                first_line(exc),
                extra=execution_fields(c),
            )
            return
        if requested:
            self._slots.cancel_requested(c)
