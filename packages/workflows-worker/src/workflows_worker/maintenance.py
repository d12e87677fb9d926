"""Upkeep: the fleet's (dead peers, due timers, overdue workflows, pruning), run by one elected
worker, and each worker's own (its audit and gauges)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

from workflows import retention
from workflows.config import Settings
from workflows.store import WorkerStore
from workflows_worker.audit import Audit
from workflows_worker.clock import DbClock
from workflows_worker.errors import first_line
from workflows_worker.flow import FlowView
from workflows_worker.logs import get_logger
from workflows_worker.metrics import WorkerMetrics
from workflows_worker.queue_gauges import read_queue_gauges
from workflows_worker.wakeup import Wakeup

log = get_logger(__name__)


class Maintenance:
    """Every heartbeat interval: stand for the lead, read the flow settings (see flow.py),
    then the audit and the gauges; while this worker leads, recovery of dead peers then, and
    timers and deadlines every poll interval.

    What must run once across the fleet runs on the leader only: its lease lasts half a
    heartbeat timeout and is renewed every interval (less than half a timeout, as settings
    require), so a dead leader is replaced within one timeout. Those steps are safe to run
    twice, so the lease saves work rather than guards correctness; still, this worker counts
    its lease from before it asked, so it stops before the database lets another take over.

    ``steady``: whether this worker's own heartbeats have been on time for a whole timeout (it
    judges no peer dead before); ``stuck``: its threads stuck past their calls' timeouts.
    """

    def __init__(
        self,
        store: WorkerStore,
        worker_id: str,
        queues: Sequence[str],
        settings: Settings,
        *,
        audit: Audit,
        metrics: WorkerMetrics,
        wakeup: Wakeup,
        steady: Callable[[], bool],
        stuck: Callable[[], int],
        flow: FlowView | None = None,
        clock: DbClock | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._queues = list(queues)
        self._interval = settings.worker_heartbeat_interval
        self._timeout = settings.worker_heartbeat_timeout
        self._poll = settings.worker_poll_interval
        self._depth_limit = settings.worker_queue_depth_exact_limit
        self._audit = audit
        self._metrics = metrics
        self._wakeup = wakeup
        self._steady = steady
        self._stuck = stuck
        self._flow = flow
        self._clock = clock
        # Monotonic time until which this worker's lease holds (0: it does not lead).
        self._lease_until = 0.0
        # Seconds each finished status is kept (None: forever), from WORKFLOWS_RETENTION*.
        self._keep = retention.cutoffs(settings)

    @property
    def leading(self) -> bool:
        return time.monotonic() < self._lease_until

    async def run(self) -> None:
        # Pruning on a task of its own: a backlog of finished rows (retention just turned on,
        # or lowered) takes many batches, and timers must not wait behind them.
        pruning = asyncio.create_task(self._prune_loop())
        try:
            await self._duties()
        finally:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning

    async def _duties(self) -> None:
        next_beat = 0.0
        while True:
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._interval
                await self._step("standing for the lead", self.lead)
                if self.leading:
                    await self._step("recovery", self.recover)
                if self._flow is not None:
                    await self._step("reading the flow settings", self._flow.refresh)
                if self._clock is not None:
                    await self._step("reading the database's time", self._clock.refresh)
                await self._step("the audit", self._audit.run)
                await self._step("sampling the gauges", self.sample_gauges)
            if self.leading:
                await self._step("maintenance", self.sweep)
            await asyncio.sleep(min(self._poll, self._interval))

    async def _step(self, what: str, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._store.is_transient(exc):
                log.warning("%s failed (%s)", what, first_line(exc))
            else:
                # Were this loop to end, timers would stop firing and dead peers would stay
                # unrecovered: log and go on.
                log.exception("%s failed", what)

    async def lead(self) -> bool:
        """Become or stay the leader, if no other live worker is; whether this one leads."""
        asked = time.monotonic()
        was = self.leading
        ttl = self._timeout / 2
        if await self._store.lead(self._worker_id, ttl):
            self._lease_until = asked + ttl
        else:
            self._lease_until = 0.0
        if self.leading != was:
            log.info(
                "worker %s %s the fleet's maintenance",
                self._worker_id[:8],
                "leads" if self.leading else "no longer leads",
            )
        return self.leading

    async def resign(self) -> None:
        """Let another worker lead now, rather than once the lease lapses (a clean stop)."""
        self._lease_until = 0.0
        try:
            await self._store.resign(self._worker_id)
        except Exception as exc:
            if not self._store.is_transient(exc):
                raise

    async def sweep(self) -> None:
        """Fire the timers due and fail the workflows past their timeout."""
        fired = await self._store.fire_due_steps()
        expired = await self._store.expire_workflows()
        if expired:
            log.info("failed %d workflows past their timeout", len(expired))
            for queue in expired:
                self._metrics.execution_finished(queue, "workflow", "failed")
        if fired:
            self._wakeup.look()

    async def _prune_loop(self) -> None:
        if not retention.anything_to_prune(self._keep):
            return
        while True:
            if self.leading:
                await self._step("pruning", self.prune)
            await asyncio.sleep(self._interval)

    async def prune(self) -> int:
        """Delete the finished trees past their retention, a batch (one short transaction) at
        a time with a pause between, while this worker leads; how many executions went."""
        total = 0
        while self.leading:
            args = retention.statement_args(self._keep, retention.BATCH, False)
            row = (await self._store.control("prune", args))[0]
            total += int(row["executions"])
            self._metrics.pruned(int(row["executions"]))
            if int(row["roots"]) < retention.BATCH:
                break
            await asyncio.sleep(retention.PAUSE)
        if total:
            log.debug("pruned %d finished executions past their retention", total)
        return total

    async def recover(self) -> None:
        """Take over the work of dead peers, once this worker's own beats are steady."""
        if not self._steady():
            return
        recovery = await self._store.recover(self._worker_id, self._timeout)
        for worker in recovery.dead:
            self._metrics.worker_recovered()
            log.warning(
                "recovered dead worker %s (%s pid %s)",
                worker.worker_id[:8],
                worker.hostname,
                worker.pid,
            )
        if recovery.recovered or recovery.workflow_queues:
            log.warning(
                "recovered %d executions (%d workflows) from lost workers",
                len(recovery.recovered) + len(recovery.workflow_queues),
                len(recovery.workflow_queues),
            )
            for row in recovery.recovered:
                self._metrics.execution_recovered(row.queue, row.kind)
                if row.status != "pending":
                    self._metrics.execution_finished(row.queue, row.kind, row.status)
            for queue in recovery.workflow_queues:
                self._metrics.execution_recovered(queue, "workflow")
            self._wakeup.look()

    async def sample_gauges(self) -> None:
        self._metrics.set_stuck_threads(self._stuck())
        self._metrics.set_workers_alive(await self._store.workers_alive(self._timeout))
        gauges = await read_queue_gauges(self._store, self._queues, self._depth_limit)
        self._metrics.set_queue_depth(gauges.depths, gauges.estimated)
        self._metrics.set_oldest_pending_age(gauges.oldest_pending_age)
