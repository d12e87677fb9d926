"""The worker: its parts put together, started, watched and stopped.

Each part has one job and its own state, and gets its collaborators from here:

- ``pump.Pump``: the claim-and-record loop (outcomes written, free slots filled);
- ``executor.Executor``: runs a claim in its slot (timeouts, retries, cancels);
- ``workflow_runner.WorkflowRunner``: workflows to their next activation; the sticky cache;
- ``batches``: outcomes queued for the pump; activations written in batches;
- ``notifications.Notifications``: work, cancels and handoffs heard; offers made;
- ``maintenance.Maintenance``: the leader's recovery, timers and deadlines; audit; gauges;
- ``slots.Slots``: what runs here, and how many more may start;
- ``heartbeat.HeartbeatThread`` and ``watchdog.LoopWatch``: liveness, from threads.

A job: the pump claims it (or the notifications take it, handed over) -> the executor runs it
in a slot and queues its outcome -> the pump's next round records it with the next claim.
A workflow: its claim -> the runner resumes its copy in memory (or replays its history) to the
next activation -> written in a batch, which claims the activities it starts for this worker ->
each activity's outcome goes to the runner's copy, which runs on at once, and is written with
the activation that follows, in one batch (the next activities start ahead of that write).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import workflows
from workflows.api import REGISTRY
from workflows.config import MAX_CONCURRENCY, MAX_PREFETCH, Settings
from workflows.records import Claimed, Registration
from workflows.store import WorkerStore, backend
from workflows_worker.audit import Audit
from workflows_worker.batches import ActivationBatches, OutcomeQueue, WriteHealth
from workflows_worker.clock import DbClock
from workflows_worker.executor import Executor
from workflows_worker.flow import FlowView
from workflows_worker.heartbeat import HeartbeatThread
from workflows_worker.imports import ImportPolicy, known_workflow_versions
from workflows_worker.logs import bound, get_logger
from workflows_worker.maintenance import Maintenance
from workflows_worker.metrics import MetricsServer, WorkerMetrics
from workflows_worker.notifications import Notifications
from workflows_worker.pump import Pump
from workflows_worker.scheduler import Scheduler
from workflows_worker.slots import Slots
from workflows_worker.sync_pool import SyncPool
from workflows_worker.wakeup import Wakeup
from workflows_worker.watchdog import LoopWatch
from workflows_worker.workflow_runner import WorkflowRunner

log = get_logger(__name__)


@dataclass
class _Parts:
    """The parts that talk to the store, made once it is connected."""

    store: WorkerStore
    runner: WorkflowRunner
    executor: Executor
    activations: ActivationBatches
    notifications: Notifications
    maintenance: Maintenance
    heart: HeartbeatThread
    pump: Pump
    flow: FlowView
    clock: DbClock


class Worker:
    """Runs executions from ``queues`` until stopped (or, in burst mode, until they are empty)."""

    def __init__(
        self,
        queues: Sequence[str],
        *,
        settings: Settings | None = None,
        concurrency: int | None = None,
        prefetch: int | None = None,
        burst: bool = False,
        metrics_port: int | None = None,
        dsn: str | None = None,
    ) -> None:
        if not queues:
            raise workflows.ConfigurationError("a worker needs at least one queue (-q QUEUE)")
        from workflows.api import validate_queue

        self.queues = [validate_queue(q) for q in dict.fromkeys(queues)]
        self.settings = settings or Settings.current()
        self.concurrency = (
            self.settings.worker_max_concurrent if concurrency is None else concurrency
        )
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise workflows.ConfigurationError(
                f"concurrency must be from 1 to {MAX_CONCURRENCY:,}, not {self.concurrency}"
            )
        self.prefetch = self.settings.worker_prefetch if prefetch is None else prefetch
        if not 0 <= self.prefetch <= MAX_PREFETCH:
            raise workflows.ConfigurationError(
                f"prefetch must be from 0 to {MAX_PREFETCH:,}, not {self.prefetch}"
            )
        self.burst = burst
        self.metrics_port = (
            metrics_port if metrics_port is not None else self.settings.worker_metrics_port
        )
        self.dsn = dsn
        self.id = str(uuid.uuid4())
        self.metrics = WorkerMetrics(self.queues)
        self._stopping = asyncio.Event()
        self._wakeup = Wakeup()
        self._writes = WriteHealth(self.settings.worker_heartbeat_timeout)
        self._pool = SyncPool(self.concurrency)
        self._slots = Slots(
            self.concurrency,
            stuck=lambda: self._pool.stuck,
            # A worker whose writes keep failing claims nothing more it could not record.
            closed=lambda: self._stopping.is_set() or self._writes.failing,
            ahead=self.prefetch,
        )
        self.metrics.watch_claims_waiting(self._slots.waiting)
        self._outcomes = OutcomeQueue(self._wakeup)
        self._imports = ImportPolicy.from_settings(self.settings)
        self._watch = LoopWatch(on_block=self._loop_blocked, on_lag=self.metrics.set_loop_lag)
        self._server: MetricsServer | None = None
        self._parts: _Parts | None = None
        self._healthy = False

    @property
    def executed(self) -> int:
        """Runs ended on this worker (any status)."""
        return 0 if self._parts is None else self._parts.executor.executed

    # ---- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; in-flight work gets the shutdown grace period to finish."""
        if not self._stopping.is_set():
            log.info(
                "worker %s stopping: no new claims, waiting for %d in flight",
                self.id[:8],
                len(self._slots),
                extra={"worker_id": self.id},
            )
        self._stopping.set()
        self._wakeup.wake()

    async def run(self) -> None:
        # Every record of this worker's tasks (they inherit the context) names it.
        with bound(worker_id=self.id):
            await self._run()

    async def _run(self) -> None:
        store = await backend("a worker").worker_store(
            self.settings, dsn=self.dsn, max_size=self.concurrency + 4
        )
        registration = Registration(
            socket.gethostname(),
            os.getpid(),
            tuple(self.queues),
            workflows.__version__,
        )
        try:
            await store.register_worker(self.id, registration)
        except BaseException:
            await store.close()
            raise
        parts = self._parts = self._assemble(store, registration)
        self._watch.start()
        parts.heart.start()
        if self.metrics_port is not None:
            self._server = MetricsServer(
                self.metrics.registry,
                self.healthy,
                host=self.settings.worker_metrics_host,
                port=self.metrics_port,
            )
            self._server.start()
            log.info("metrics on :%d/metrics", self._server.port)
        log.info(
            "worker %s serving %s (concurrency %d%s)",
            self.id[:8],
            ",".join(self.queues),
            self.concurrency,
            f", claiming up to {self.prefetch} ahead" if self.prefetch else "",
        )
        parts.notifications.start()
        try:
            # Before the first claim: which queues' activities may run ahead (flow.py), and
            # the database's time (clock.py).
            await parts.flow.refresh()
            await parts.clock.refresh()
        except Exception as exc:
            # Then none do until maintenance reads it: the safe side.
            if not store.is_transient(exc):
                raise
        maintenance = asyncio.create_task(parts.maintenance.run(), name="workflows-maintenance")
        tasks = [maintenance]
        if not self.burst:
            # A burst worker stops once its queues are empty: ticks would keep them busy.
            scheduler = Scheduler(store, self.settings, REGISTRY, self._stopping)
            tasks.append(asyncio.create_task(scheduler.run(), name="workflows-scheduler"))
        pump = asyncio.create_task(parts.pump.run(), name="workflows-pump")
        self._healthy = True
        try:
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([pump, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            # Jobs handed over from now on go back (see Notifications); fewer is better.
            await parts.notifications.withdraw()
            if not pump.done():
                await self._drain(pump, parts.executor)
            pump.result()
        finally:
            self._healthy = False
            for task in (*tasks, pump):
                task.cancel()
            for task in (*tasks, pump):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            parts.runner.close()
            parts.flow.close()
            await parts.notifications.close()
            try:
                await parts.maintenance.resign()
            except Exception:
                log.exception("resigning the fleet's maintenance failed")
            # Before deregistering: a beat after it would register the worker again.
            await asyncio.to_thread(parts.heart.stop)
            try:
                await store.deregister_worker(self.id)
            except Exception as exc:
                if not store.is_transient(exc):
                    raise
            finally:
                await self._watch.stop()
                # Threads stuck in calls past their timeout are daemons: the process still
                # exits.
                self._pool.close()
                await store.close()
                if self._server is not None:
                    await asyncio.to_thread(self._server.stop)
            log.info("worker %s stopped after %d executions", self.id[:8], self.executed)

    def healthy(self) -> bool:
        """For ``/healthz``, called on the metrics server's thread: reads state only."""
        parts = self._parts
        return (
            self._healthy
            and parts is not None
            and parts.notifications.alive
            and not self._watch.blocked
            and not self._pool.exhausted
            and not self._writes.failing
        )

    def _assemble(self, store: WorkerStore, registration: Registration) -> _Parts:
        settings, worker_id = self.settings, self.id
        activations = ActivationBatches(store, worker_id, self._wakeup, self._writes)
        flow = FlowView(
            store,
            worker_id,
            self.queues,
            self._slots,
            self._wakeup.look,
            settings.worker_poll_interval,
        )
        clock = DbClock(store)
        runner = WorkflowRunner(
            store,
            worker_id,
            settings,
            clock=clock,
            queues=frozenset(self.queues),
            slots=self._slots,
            activations=activations,
            imports=self._imports,
            metrics=self.metrics,
            # The executor and the runner start each other's work: this closes the loop.
            start=self._start,
            versions=known_workflow_versions(),
            eager_queues=flow.eager_queues,
        )
        executor = Executor(
            store,
            worker_id,
            settings,
            slots=self._slots,
            outcomes=self._outcomes,
            workflows=runner,
            imports=self._imports,
            pool=self._pool,
            metrics=self.metrics,
            wakeup=self._wakeup,
        )
        self._slots.start = executor.start
        notifications = Notifications(
            store,
            worker_id,
            self.queues,
            settings,
            slots=self._slots,
            wakeup=self._wakeup,
            execute=executor.execute,
        )
        heart = HeartbeatThread(
            store.heart(worker_id, registration),
            interval=settings.worker_heartbeat_interval,
            timeout=settings.worker_heartbeat_timeout,
            loop_watch=self._watch,
        )
        maintenance = Maintenance(
            store,
            worker_id,
            self.queues,
            settings,
            audit=Audit(store, worker_id, self._slots),
            metrics=self.metrics,
            wakeup=self._wakeup,
            steady=heart.steady,
            stuck=lambda: self._pool.stuck,
            flow=flow,
            clock=clock,
        )
        pump = Pump(
            store,
            worker_id,
            self.queues,
            settings,
            slots=self._slots,
            outcomes=self._outcomes,
            activations=activations,
            wakeup=self._wakeup,
            health=self._writes,
            holds=runner.holds,
            versions=runner.versions,
            stopping=self._stopping.is_set,
            burst=self.burst,
            on_idle=notifications.offer,
            claimed=flow.claimed,
        )
        return _Parts(
            store,
            runner,
            executor,
            activations,
            notifications,
            maintenance,
            heart,
            pump,
            flow,
            clock,
        )

    async def sync_clock(self, moved: float | None = None) -> None:
        """Read the database's time again now (a test environment that moved it says so).

        ``moved``: the seconds the clock was just moved by, applied before anything else runs
        (a reading of the clock already under way, of the time before the move, is dropped).
        """
        if self._parts is not None:
            if moved is not None:
                self._parts.clock.shift(moved)
            await self._parts.clock.refresh()

    def _start(self, c: Claimed) -> None:
        assert self._parts is not None
        self._parts.executor.start(c)

    def _loop_blocked(self, name: str, seconds: float) -> None:
        # Called on the watch thread: prometheus_client's metrics are thread-safe.
        self.metrics.loop_blocked(name)

    async def _drain(self, pump: asyncio.Task[None], executor: Executor) -> None:
        """In-flight work gets the grace period; what is still running then goes back."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), self.settings.worker_shutdown_grace)
            return
        pending = executor.cancel_all()
        log.warning("shutdown grace over: releasing %d executions back to pending", pending)
        await asyncio.wait([pump], timeout=10)
