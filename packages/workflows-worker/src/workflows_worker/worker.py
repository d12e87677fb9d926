"""The worker: claim, run, record; keep suspended workflows in memory; watch peers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

import workflows
from workflows import codec
from workflows.config import Settings
from workflows.errors import SerializationError
from workflows.history import Activation, StepRecord, WaitSignal
from workflows.replay import WorkflowInstance
from workflows_postgres import queries as Q
from workflows_postgres.connect import first_line
from workflows_postgres.store import (
    ActivationResult,
    Advance,
    Advanced,
    Claimed,
    Outcome,
    PostgresStore,
    Recovered,
    eager_claims,
    handed_over,
)
from workflows_worker.imports import FunctionNotFound, ImportPolicy, known_workflow_versions
from workflows_worker.metrics import MetricsServer, WorkerMetrics
from workflows_worker.sync_pool import SyncPool
from workflows_worker.watchdog import HeartbeatThread, LoopWatch

log = logging.getLogger("workflows.worker")

_DB_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # What asyncpg raises for a pooled connection caught mid-query by a server shutdown
    # ("cannot switch to state 12; another operation (2) is in progress").
    asyncpg.InternalClientError,
    workflows.DatabaseUnavailableError,
)


class UnstorableOutcomeError(Exception):
    """The database refused one item of a batched write (a value it cannot hold)."""


def _poison(exc: BaseException) -> bool:
    """Whether a failed write may be one item's doing rather than the database's state.

    Data exceptions (class 22: a character the database's encoding lacks, a value out of
    range), integrity (23) and program limits (54), or a value the driver cannot encode. Any
    other error (the connection, privileges, a shutdown) would fail every item alike.
    """
    if isinstance(exc, UnicodeError | OverflowError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23", "54")


def _unstorable(exc: BaseException) -> dict[str, Any]:
    # ASCII: the message itself must be storable in whatever encoding refused the value.
    detail = first_line(exc).encode("ascii", "backslashreplace").decode("ascii")[:500]
    return {
        "type": "UnstorableOutcome",
        "message": f"the database refused to store this execution's outcome: {detail}",
    }


@dataclass
class _Sticky:
    """A suspended workflow kept in memory, as of its claim ``claimed``."""

    instance: WorkflowInstance
    claimed: Claimed
    # Activations run here on an activity's result whose write is not yet known to be done:
    # while any is, the copy is ahead of the database and no claim may resume it.
    inflight: int = 0
    # An activation already run (on an activity's result) that ends the workflow: applied by
    # the claim that follows.
    ready: Activation | None = None

    @property
    def lease(self) -> int:
        return self.claimed.lease


class Worker:
    """Runs executions from ``queues`` until stopped (or, in burst mode, until they are empty)."""

    def __init__(
        self,
        queues: Sequence[str],
        *,
        settings: Settings | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        metrics_port: int | None = None,
        dsn: str | None = None,
    ) -> None:
        if not queues:
            raise workflows.ConfigurationError("a worker needs at least one queue (-q QUEUE)")
        from workflows.api import validate_queue

        self.queues = [validate_queue(q) for q in dict.fromkeys(queues)]
        self.queue_set = frozenset(self.queues)
        self.settings = settings or Settings.from_env()
        self.concurrency = concurrency or self.settings.worker_max_concurrent
        self.burst = burst
        self.metrics_port = (
            metrics_port if metrics_port is not None else self.settings.worker_metrics_port
        )
        self.dsn = dsn
        self.id = str(uuid.uuid4())
        self.metrics = WorkerMetrics(self.queues)
        self.store: PostgresStore | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._cancel_requested: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._outcomes: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._advances: list[tuple[Advance, asyncio.Future[Advanced]]] = []
        # Batches of activations being written, and the workflows they are of.
        self._batches: set[asyncio.Task[None]] = set()
        self._advancing: set[str] = set()
        self._look = True
        self._sticky: OrderedDict[str, _Sticky] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._listener: asyncpg.Connection | None = None
        self._listener_lock = asyncio.Lock()
        self._healthy = False
        self._server: MetricsServer | None = None
        self._suspects: set[tuple[str, int]] = set()
        # Tasks waiting for their outcome (or activation) to be written, and activities run
        # ahead of the write that starts them whose write did not happen.
        self._writing = 0
        self._abandoned: set[str] = set()
        self.executed = 0
        # Handoffs (0003): the listener holds the advisory lock _lock_key while connected; an
        # idle worker renews its offer at _offer_due (loop time; 0: now, when next idle).
        self._lock_key = random.getrandbits(63)
        self._locked = False
        self._offer_due = 0.0
        self._claiming = 0
        self._background: set[asyncio.Task[None]] = set()
        # Claims of what runs here, by id (a cancel announced is checked against its lease).
        self._claims: dict[str, Claimed] = {}
        self._imports = ImportPolicy.from_settings(self.settings)
        self._pool = SyncPool(self.concurrency)
        self._watch = LoopWatch(on_block=self._loop_blocked, on_lag=self.metrics.set_loop_lag)
        self._heart: HeartbeatThread | None = None
        # Since when every write of outcomes has failed (None: the last one went through).
        self._failing_since: float | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; in-flight work gets the shutdown grace period to finish."""
        if not self._stopping.is_set():
            log.info(
                "worker %s stopping: no new claims, waiting for %d in flight",
                self.id[:8],
                len(self._inflight),
            )
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        self.store = await PostgresStore.connect(
            self.settings, dsn=self.dsn, min_size=2, max_size=self.concurrency + 4
        )
        store = self.store
        self._versions = known_workflow_versions()
        registration = (socket.gethostname(), os.getpid(), self.queues, workflows.__version__)
        await store.register_worker(self.id, *registration)
        self._watch.start()
        self._heart = HeartbeatThread(
            store.dsn,
            self.settings.schema,
            self.id,
            interval=self.settings.worker_heartbeat_interval,
            timeout=self.settings.worker_heartbeat_timeout,
            registration=registration,
            loop_watch=self._watch,
        )
        self._heart.start()
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
            "worker %s serving %s (concurrency %d)",
            self.id[:8],
            ",".join(self.queues),
            self.concurrency,
        )
        background = [
            asyncio.create_task(self._listen_loop(), name="workflows-listen"),
            asyncio.create_task(self._maintenance_loop(), name="workflows-maintenance"),
        ]
        pump = asyncio.create_task(self._pump_loop(), name="workflows-pump")
        self._healthy = True
        try:
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([pump, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            with contextlib.suppress(*_DB_ERRORS):
                # Jobs handed over from now on go back (see _on_start); fewer is better.
                await store.withdraw(self.id)
            if not pump.done():
                await self._drain(pump)
            pump.result()
        finally:
            self._healthy = False
            for task in [*background, pump]:
                task.cancel()
            for task in [*background, pump]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for entry in self._sticky.values():
                entry.instance.close()
            self._sticky.clear()
            if self._background:
                # Jobs being given back: else they wait for a peer to recover them.
                await asyncio.wait(self._background, timeout=5)
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close()
            # Before deregistering: a beat after it would register the worker again.
            await asyncio.to_thread(self._heart.stop)
            with contextlib.suppress(*_DB_ERRORS):
                await store.deregister_worker(self.id)
            await self._watch.stop()
            # Threads stuck in calls past their timeout are daemons: the process still exits.
            self._pool.close()
            await store.close()
            if self._server is not None:
                await asyncio.to_thread(self._server.stop)
            log.info("worker %s stopped after %d executions", self.id[:8], self.executed)

    def healthy(self) -> bool:
        """For ``/healthz``, called on the metrics server's thread: reads state only."""
        return (
            self._healthy
            and self._listener is not None
            and not self._listener.is_closed()
            and not self._watch.blocked
            and not self._pool.exhausted
            and not self._writes_failing()
        )

    def _writes_failing(self) -> bool:
        since = self._failing_since
        return since is not None and (
            time.monotonic() - since > self.settings.worker_heartbeat_timeout
        )

    def _capacity(self) -> int:
        """Executions this worker can run at once: its concurrency, less the threads stuck in
        calls past their timeout (each holds its slot until the call returns)."""
        return self.concurrency - self._pool.stuck

    def _free_slots(self) -> int:
        """Slots free for new claims: the one place that says how many."""
        if self._stopping.is_set() or self._writes_failing():
            # A worker whose writes keep failing claims nothing more it could not record.
            return 0
        # Executions waiting for their outcome to be written run no code: their slots are
        # free (so under load claims go with the outcomes that free them).
        return max(self._capacity() - len(self._inflight) + self._writing, 0)

    def _loop_blocked(self, name: str, seconds: float) -> None:
        # Called on the watch thread: prometheus_client's metrics are thread-safe.
        self.metrics.loop_blocked(name)

    async def _drain(self, pump: asyncio.Task[None]) -> None:
        """In-flight work gets the grace period; what is still running then goes back."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), self.settings.worker_shutdown_grace)
            return
        pending = list(self._inflight.values())
        log.warning("shutdown grace over: releasing %d executions back to pending", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.wait([pump], timeout=10)

    # ---- the pump: record outcomes and claim work, one statement a round ------------------

    async def _pump_loop(self) -> None:
        """Until stopped (and drained): record finished outcomes and claim into free slots.

        Each round is one statement for everything that finished since the last, so under load
        outcomes and claims go in batches; an idle worker runs nothing until woken by a
        notification, a finished execution or its poll tick.
        """
        store = self.store
        assert store is not None
        loop = asyncio.get_running_loop()
        poll = self.settings.worker_poll_interval
        next_poll = loop.time()
        backoff = 0.1
        while True:
            self._wake.clear()
            stopping = self._stopping.is_set()
            batch, self._outcomes = self._outcomes, []
            self._dispatch_advances()
            now = loop.time()
            if now >= next_poll:
                self._look = True
                next_poll = now + poll
            free = self._free_slots()
            # Outcomes that resolve a workflow held here may claim it straight back: keep
            # their slots for that.
            resumable = sum(
                1 for o, _ in batch if o.parent_id in self._sticky and o.status != "pending"
            )
            want = max(free - resumable, 0) if self._look or batch else 0
            if not batch and not want:
                if stopping and not self._inflight and not self._batches:
                    return
                if self.burst and not self._inflight and not self._outcomes:
                    with contextlib.suppress(*_DB_ERRORS):
                        if not await store.any_runnable(self.queues):
                            return
                    self._look = True
                if self._idle() and loop.time() >= self._offer_due:
                    await self._offer(poll)
                await self._pause(max(next_poll - loop.time(), 0.0))
                continue
            self._look = False
            self._claiming = want
            try:
                recorded, claimed = await store.pump(
                    self.id,
                    [o for o, _ in batch],
                    self.queues,
                    want,
                    self._versions,
                    resume_sticky=not stopping,
                )
                backoff = 0.1
                self._failing_since = None
            except Exception as exc:
                if batch and _poison(exc):
                    # One item's value, perhaps (or the claim's): each alone, without the
                    # claim, so only an item still refused fails.
                    await self._record_one_by_one(batch, not stopping)
                    self._look = True
                    continue
                if not isinstance(exc, _DB_ERRORS):
                    log.exception("database round failed")
                else:
                    log.warning(
                        "database round failed (%s); retrying in %.1f s", codec_line(exc), backoff
                    )
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                self._outcomes = batch + self._outcomes
                self._look = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            finally:
                self._claiming = 0
            for outcome, future in batch:
                if not future.done():
                    future.set_result(outcome.id in recorded)
            # A full claim means there may be more: look again as soon as slots free up. (A
            # notification that came in meanwhile has set it already: never clear it here.)
            if want and len(claimed) == want:
                self._look = True
            for c in claimed:
                self._start(c)

    async def _record_one_by_one(
        self, batch: list[tuple[Outcome, asyncio.Future[bool]]], resume_sticky: bool
    ) -> None:
        """Record a batch the database refused item by item: whatever it still refuses alone
        fails its own execution (the waiting task records a clean error instead)."""
        store = self.store
        assert store is not None
        for outcome, future in batch:
            try:
                recorded, claimed = await store.pump(
                    self.id, [outcome], self.queues, 0, self._versions, resume_sticky=resume_sticky
                )
            except Exception as exc:
                if _poison(exc):
                    log.warning(
                        "the database refused the outcome of %s: %s", outcome.id, codec_line(exc)
                    )
                    future.set_exception(UnstorableOutcomeError(codec_line(exc)))
                else:
                    # Not this item's doing: it goes with the next round.
                    self._outcomes.append((outcome, future))
                continue
            future.set_result(outcome.id in recorded)
            for c in claimed:
                self._start(c)

    def _dispatch_advances(self) -> None:
        """Start writing the activations handed over, in up to two batches at once.

        Two, so the database writes one while this worker runs the code the other's results
        let go on, and two of the server's cores work at once. A workflow's items are in one
        batch at a time: its next wait for that one.
        """
        if not self._advances or len(self._batches) >= _MAX_BATCHES:
            return
        take: list[tuple[Advance, asyncio.Future[Advanced]]] = []
        keep: list[tuple[Advance, asyncio.Future[Advanced]]] = []
        busy = set(self._advancing)
        for pair in self._advances:
            wf_id = pair[0].workflow.id
            # All of a workflow's items may go in one batch, which keeps their order; none
            # while another batch has one of them.
            if wf_id in busy:
                keep.append(pair)
            else:
                self._advancing.add(wf_id)
                take.append(pair)
        self._advances = keep
        if take:
            task = asyncio.create_task(self._write_batch(take), name="workflows-advance")
            self._batches.add(task)

    async def _write_batch(self, items: list[tuple[Advance, asyncio.Future[Advanced]]]) -> None:
        store = self.store
        assert store is not None
        try:
            advanced = await store.advance(self.id, [a for a, _ in items])
            self._failing_since = None
        except Exception as exc:
            if _poison(exc):
                # One item's value, perhaps: each alone, so only that one fails.
                await self._advance_one_by_one(items)
                return
            # Written or not (a reply lost after the commit), it is safe to send again: what
            # was written is fenced off (stale), and the audit frees what it left running.
            log.warning(
                "writing %d workflow activations failed (%s); retrying in 0.5 s",
                len(items),
                codec_line(exc),
            )
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            await asyncio.sleep(0.5)
            self._advances = items + self._advances
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
                self._advancing.discard(item.workflow.id)
            task = asyncio.current_task()
            if task is not None:
                self._batches.discard(task)
            self._wake.set()

    async def _advance_one_by_one(
        self, items: list[tuple[Advance, asyncio.Future[Advanced]]]
    ) -> None:
        """Write a batch the database refused item by item: whatever it still refuses alone
        fails its own execution (its task writes a clean error instead)."""
        store = self.store
        assert store is not None
        for n, (item, waiter) in enumerate(items):
            try:
                (result,) = await store.advance(self.id, [item])
            except Exception as exc:
                if not _poison(exc):
                    # Not this item's doing: it and the rest go with the next batch.
                    self._advances = items[n:] + self._advances
                    return
                log.warning(
                    "the database refused an activation of workflow %s: %s",
                    item.workflow.id,
                    codec_line(exc),
                )
                if not waiter.done():
                    waiter.set_exception(UnstorableOutcomeError(codec_line(exc)))
                continue
            if not waiter.done():
                waiter.set_result(result)

    def _idle(self) -> bool:
        return (
            self._locked
            and not self.burst
            and not self._stopping.is_set()
            and not self._inflight
            and not self._outcomes
            and not self._advances
            and not self._batches
            # Threads stuck in calls past their timeout: a job handed over would go back.
            and self._free_slots() > 0
        )

    async def _offer(self, poll: float) -> None:
        """Offer this idle worker for the next job of its queues, renewed every poll.

        It lapses after two polls and a second, so a worker that stops renewing (paused, or its
        event loop stuck) stops getting jobs handed over within seconds; a dead one holds no lock.
        """
        store = self.store
        assert store is not None
        self._offer_due = asyncio.get_running_loop().time() + poll
        try:
            await store.offer(self.id, self.queues, self._lock_key, 2 * poll + 1)
        except _DB_ERRORS as exc:
            # Not registered just now (a peer declared it dead): the next beat registers again.
            log.debug("offering this worker failed (%s)", codec_line(exc))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _start(self, c: Claimed) -> None:
        task = asyncio.create_task(self._execute(c), name=f"workflows-{c.kind}-{c.id}")
        self._inflight[c.id] = task
        self._claims[c.id] = c

    # ---- executing -----------------------------------------------------------------------

    async def _execute(self, c: Claimed) -> None:
        started = time.monotonic()
        self.metrics.execution_started(c.queue, c.kind, c.pickup_latency)
        status = "failed"
        try:
            if c.kind == "workflow":
                status = await self._run_workflow(c)
            else:
                status = await self._run_function(c)
        except asyncio.CancelledError:
            status = await self._on_cancelled(c)
        except _DB_ERRORS as exc:
            # Typically the database went away mid-activation: give it back (uncounted, a few
            # times in a row at most).
            log.warning("database error running %s %s (%s)", c.kind, c.id, codec_line(exc))
            status = "released"
            await self._hand_back(c, delay=1.0)
        except Exception as exc:
            # A fault of this worker's, not of the code it ran: the attempt still counts, or
            # the same execution could come back here forever.
            log.exception("internal error running %s %s", c.kind, c.id)
            status = await self._internal_error(c, exc, started)
        finally:
            self._inflight.pop(c.id, None)
            self._claims.pop(c.id, None)
            self._cancel_requested.discard(c.id)
            self._abandoned.discard(c.id)
            self.executed += 1
            elapsed = time.monotonic() - started
            if status in _RUN_STATUSES:
                self.metrics.execution_finished(c.queue, c.kind, status, elapsed)
            else:
                # Suspended workflows, released or stale claims: the run ended, no outcome.
                self.metrics.execution_suspended(c.queue, c.kind, elapsed)
            self._wake.set()

    async def _internal_error(self, c: Claimed, exc: Exception, started: float) -> str:
        error = {"type": "InternalError", "message": f"worker error: {codec.safe_str(exc)}"}
        try:
            if c.kind == "workflow":
                return await self._fail_workflow(c, error)
            return await self._fail(c, error, started, isolated=True)
        except Exception:
            log.exception("recording the failure of %s %s failed", c.kind, c.id)
            await self._hand_back(c, delay=1.0)
            return "released"

    async def _hand_back(self, c: Claimed, delay: float) -> None:
        """Release ``c`` (see queries.RELEASE), however long the database is away.

        This worker stays alive and beating, so no peer would ever recover an execution it
        left running: it must give it back.
        """
        assert self.store is not None
        backoff = 0.1
        while True:
            try:
                await self.store.release(c, self.id, delay=delay)
                return
            except _DB_ERRORS as exc:
                log.warning(
                    "handing %s %s back failed (%s); retrying in %.1f s",
                    c.kind,
                    c.id,
                    codec_line(exc),
                    backoff,
                )
            except Exception:
                log.exception("handing %s %s back failed", c.kind, c.id)
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _on_cancelled(self, c: Claimed) -> str:
        assert self.store is not None
        if c.id in self._abandoned:
            self._abandoned.discard(c.id)
            log.debug("dropped activity %s id=%s: run ahead of a write that failed", c.name, c.id)
            return "stale"
        if c.id in self._cancel_requested:
            error = {"type": "ExecutionCancelledError", "message": "cancelled on request"}
            await self._record(
                Outcome(
                    c.id,
                    c.lease,
                    "cancelled",
                    error=codec.encode(error),
                    parent_id=c.parent_id,
                )
            )
            log.info("cancelled %s %s id=%s", c.kind, c.name, c.id)
            return "cancelled"
        # Shutdown past its grace: give the execution back (uncounted, a few times at most).
        with contextlib.suppress(*_DB_ERRORS):
            await self.store.release(c, self.id)
        log.info("released %s %s id=%s back to pending", c.kind, c.name, c.id)
        return "released"

    async def _run_function(self, c: Claimed) -> str:
        log.info("started %s %s id=%s attempt=%d", c.kind, c.name, c.id, c.attempts)
        started = time.monotonic()
        if c.attempts > c.max_retries + 1:
            # Given back so often that the attempts counted (queries.RELEASE) passed the limit.
            error = {
                "type": "AttemptsExhaustedError",
                "message": f"attempt {c.attempts} of {c.max_retries + 1}: released back to "
                "pending too many times in a row",
            }
            return await self._finish(c, "failed", None, error, started)
        try:
            fn = self._imports.resolve(c.name, c.kind)
        except FunctionNotFound as exc:
            # Retrying cannot make a missing function appear: fail for good, now.
            return await self._finish(c, "failed", None, _error(exc, "FunctionNotFound"), started)
        deadline = asyncio.timeout(c.timeout)
        task = asyncio.current_task()
        try:
            args, kwargs = codec.decode_call(c.args)
            async with deadline:
                if fn.is_async:
                    value = await fn.fn(*args, **kwargs)
                else:
                    value = await self._pool.run(fn.fn, *args, **kwargs)
        except asyncio.CancelledError as exc:
            if task is not None and task.cancelling():
                raise  # this worker's own cancel: a cancel request, or the shutdown
            # Raised by the code itself (a library leaking one): a failure like any other.
            return await self._fail(c, codec.error_payload(exc), started)
        except BaseException as exc:
            # Whatever the code raises fails this attempt and nothing else: SystemExit
            # (sys.exit(), argparse, click), KeyboardInterrupt and GeneratorExit would end
            # the worker, and every restart would take the same execution and die again.
            if isinstance(exc, TimeoutError) and deadline.expired():
                timed_out = TimeoutError(f"timed out after {c.timeout} s")
                return await self._fail(c, _error(timed_out, "TimeoutError"), started)
            return await self._fail(c, codec.error_payload(exc), started)
        try:
            text = codec.encode(value, what="result", max_bytes=self.settings.max_payload_bytes)
        except Exception as exc:
            # Counted like any failure: a result need not come out the same on a retry.
            return await self._fail(c, codec.error_payload(exc, with_traceback=False), started)
        return await self._finish(c, "completed", text, None, started)

    async def _fail(
        self, c: Claimed, error: dict[str, Any], started: float, *, isolated: bool = False
    ) -> str:
        """A failed attempt: retried after a backoff while retries remain, else failed."""
        if c.attempts > c.max_retries:
            return await self._finish(c, "failed", None, error, started, isolated=isolated)
        delay = _backoff(self.settings, c.attempts)
        try:
            ok = await self._record(
                Outcome(c.id, c.lease, "pending", error=codec.encode(error), retry_delay=delay)
            )
        except UnstorableOutcomeError as exc:
            if isolated:
                raise
            return await self._fail(c, _unstorable(exc), started, isolated=True)
        log.info(
            "failed %s %s id=%s attempt=%d (%s: %s); retry in %.2f s%s",
            c.kind,
            c.name,
            c.id,
            c.attempts,
            error.get("type"),
            error.get("message"),
            delay,
            "" if ok else " [stale claim: discarded]",
        )
        return "retried"

    async def _finish(
        self,
        c: Claimed,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
        started: float,
        *,
        isolated: bool = False,
    ) -> str:
        error_text = None if error is None else codec.encode(error)
        try:
            ok = await self._advance(c, status, result, error_text)
            if ok is None:
                ok = await self._record(
                    Outcome(
                        c.id,
                        c.lease,
                        status,
                        result=result,
                        error=error_text,
                        parent_id=c.parent_id,
                    )
                )
        except UnstorableOutcomeError as exc:
            if isolated:
                raise
            # The database refused this outcome's value: the attempt fails with a clean error.
            return await self._fail(c, _unstorable(exc), started, isolated=True)
        if not ok:
            log.warning(
                "discarded the result of %s %s id=%s: its claim was taken over",
                c.kind,
                c.name,
                c.id,
            )
            return "stale"
        if status == "failed" and error is not None:
            log.info(
                "failed %s %s id=%s after %d attempts in %.3f s: %s: %s",
                c.kind,
                c.name,
                c.id,
                c.attempts,
                time.monotonic() - started,
                error.get("type"),
                error.get("message"),
            )
        else:
            log.info(
                "%s %s %s id=%s in %.3f s", status, c.kind, c.name, c.id, time.monotonic() - started
            )
        return status

    # ---- workflows -----------------------------------------------------------------------

    async def _run_workflow(self, c: Claimed) -> str:
        store = self.store
        assert store is not None
        try:
            fn = self._imports.resolve(c.name, "workflow")
        except FunctionNotFound as exc:
            return await self._fail_workflow(c, _error(exc, "FunctionNotFound"))
        if fn.version is not None and c.version is not None and c.version > fn.version:
            # Written by newer code: leave it for a worker that has that code.
            self._versions[c.name] = fn.version
            await store.release(c, self.id, delay=0.0)
            log.info(
                "left workflow %s id=%s (version %d) for a worker newer than version %d",
                c.name,
                c.id,
                c.version,
                fn.version,
            )
            return "released"
        entry = self._sticky.pop(c.id, None)
        # Valid only if no other claim came between ours: then the claim's undelivered
        # resolutions are exactly what the copy in memory has not seen.
        if (
            entry is not None
            and entry.lease == c.lease - 1
            and not entry.inflight
            and (entry.ready is not None or not entry.instance.done)
        ):
            instance = entry.instance
            if entry.ready is not None:
                activation = entry.ready
            else:
                activation = instance.activate(c.resolutions or ())
        else:
            if entry is not None:
                entry.instance.close()
            # The first claim of a workflow (lease 1) has no history to read.
            history = [] if c.lease == 1 else await store.load_history(c.id)
            try:
                args, kwargs = codec.decode_call(c.args)
                instance, activation = WorkflowInstance.replay(
                    fn.fn,
                    args,
                    kwargs,
                    history,
                    name=c.name,
                    max_payload_bytes=self.settings.max_payload_bytes,
                )
            except Exception as exc:
                # Arguments that do not fit the function (a signature changed by a deploy)
                # fail the same way on every worker: released, it would come back forever.
                return await self._fail_workflow(c, codec.error_payload(exc))
            if history:
                log.info("replayed workflow %s id=%s from %d steps", c.name, c.id, len(history))
        status, result, error = self._ending(activation)
        try:
            applied = await self._apply(c, activation, status, result, error)
        except SerializationError as exc:
            # A step's arguments over WORKFLOWS_MAX_PAYLOAD_BYTES: as deterministic as the code.
            instance.close()
            return await self._fail_workflow(c, codec.error_payload(exc, with_traceback=False))
        except UnstorableOutcomeError as exc:
            # A value the database refused (its result, a step's arguments): as deterministic.
            instance.close()
            return await self._fail_workflow(c, _unstorable(exc))
        if applied.status is None:
            instance.close()
            log.warning(
                "discarded an activation of workflow %s id=%s: its claim was taken over",
                c.name,
                c.id,
            )
            return "stale"
        if applied.status in ("waiting", "pending") and self.settings.worker_sticky_cache > 0:
            self._sticky[c.id] = _Sticky(instance, c)
            while len(self._sticky) > self.settings.worker_sticky_cache:
                _, evicted = self._sticky.popitem(last=False)
                evicted.instance.close()
        else:
            instance.close()
        for eager in applied.eager:
            self._start(eager)
        if applied.status in ("completed", "failed", "cancelled"):
            if error is not None and applied.status == "failed":
                log.info(
                    "failed workflow %s id=%s: %s: %s",
                    c.name,
                    c.id,
                    error.get("type"),
                    error.get("message"),
                )
            else:
                log.info("%s workflow %s id=%s", applied.status, c.name, c.id)
        return applied.status

    async def _fail_workflow(self, c: Claimed, error: dict[str, Any]) -> str:
        """Fail a workflow for good, before any of its code ran to an activation."""
        assert self.store is not None
        applied = await self.store.apply_activation(
            c,
            self.id,
            number=0,
            delivered=(),
            commands=(),
            status="failed",
            result=None,
            error=error,
            eager_queues=frozenset(),
            eager_slots=0,
        )
        if applied.status is None:
            log.warning(
                "discarded an activation of workflow %s id=%s: its claim was taken over",
                c.name,
                c.id,
            )
            return "stale"
        log.warning(
            "failed workflow %s id=%s: %s: %s",
            c.name,
            c.id,
            error.get("type"),
            error.get("message"),
        )
        return applied.status

    # ---- one commit per step: an activity's outcome with its workflow's next activation ---

    def _ending(self, activation: Activation) -> tuple[str, str | None, dict[str, Any] | None]:
        """The workflow status an activation leads to, with its result as JSON, or error."""
        status, error = activation.status, activation.error
        result: str | None = None
        if status == "completed":
            try:
                result = codec.encode(
                    activation.result,
                    what="workflow result",
                    max_bytes=self.settings.max_payload_bytes,
                )
            except SerializationError as exc:
                status, error = "failed", codec.error_payload(exc, with_traceback=False)
        return status, result, error

    def _item(
        self,
        wf: Claimed,
        activation: Activation,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
        **activity: Any,
    ) -> Advance:
        """The activation as a batch item; raises SerializationError for a step's arguments."""
        store = self.store
        assert store is not None
        steps, children = store.step_rows(
            wf.queue,
            activation.number,
            activation.commands,
            self.queue_set,
            # The slot of what led here passes to the first activity; more only if free.
            max(1, self._capacity() - len(self._inflight) + 1),
        )
        return Advance(
            workflow=wf,
            number=activation.number,
            delivered=list(activation.delivered),
            outcome=status,
            result=result,
            error=None if error is None else codec.encode(error),
            steps=steps,
            children=children,
            signals=[x.name for x in activation.commands if isinstance(x, WaitSignal)],
            **activity,
        )

    async def _send(self, item: Advance) -> Advanced:
        """Hand an item to the pump's next batch and wait for what it did."""
        future: asyncio.Future[Advanced] = asyncio.get_running_loop().create_future()
        self._advances.append((item, future))
        self._wake.set()
        # Shielded: a shutdown cancel must not lose an outcome already decided.
        return await asyncio.shield(future)

    async def _apply(
        self,
        c: Claimed,
        activation: Activation,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
    ) -> ActivationResult:
        """Write the activation of a claimed workflow, batched with the worker's others."""
        store = self.store
        assert store is not None
        done = await self._send(self._item(c, activation, status, result, error))
        if done.outcome == "claimed":
            # It ends the workflow while executions it started still run: closing those is
            # more than the batch does.
            return await store.apply_activation(
                c,
                self.id,
                number=activation.number,
                delivered=activation.delivered,
                commands=activation.commands,
                status=status,
                result=result,
                error=error,
                eager_queues=self.queue_set,
                eager_slots=0,
            )
        return ActivationResult(None if done.outcome == "stale" else done.outcome, done.eager)

    async def _advance(
        self, c: Claimed, status: str, result: str | None, error: str | None
    ) -> bool | None:
        """Hand an activity's final outcome to its workflow held here, and write both at once.

        The workflow's code runs on the outcome right away (the value decoded from the very
        JSON text stored, so a replay reads back the same), then the outcome and the resulting
        activation go to the database together, in the pump's next batch. None: not possible
        here (the workflow is not held, or is busy): record the outcome alone.
        """
        if c.kind != "activity" or c.parent_id is None or status not in ("completed", "failed"):
            return None
        entry = self._sticky.get(c.parent_id)
        if (
            entry is None
            or entry.ready is not None
            or entry.instance.done
            or c.parent_seq not in entry.instance.pending_seqs
        ):
            return None
        record = StepRecord(
            seq=c.parent_seq,
            kind="activity",
            name=c.name,
            status="completed" if status == "completed" else "failed",
            result=codec.decode(result),
            error=codec.decode(error),
        )
        wf = entry.claimed
        started = time.monotonic()
        try:
            activation = entry.instance.activate([record])
        except Exception:
            log.exception("internal error resuming workflow %s id=%s", wf.name, wf.id)
            self._drop_sticky(wf.id, entry)
            return None
        wf_status, wf_result, wf_error = self._ending(activation)
        outcome = {"act_status": status, "act_result": result, "act_error": error}
        try:
            item = self._item(wf, activation, wf_status, wf_result, wf_error, activity=c, **outcome)
        except SerializationError as exc:
            # A step's arguments over WORKFLOWS_MAX_PAYLOAD_BYTES: as deterministic as the code.
            activation = Activation(
                [],
                "failed",
                error=codec.error_payload(exc, with_traceback=False),
                number=activation.number,
                delivered=activation.delivered,
            )
            wf_status, wf_result, wf_error = self._ending(activation)
            item = self._item(wf, activation, wf_status, wf_result, wf_error, activity=c, **outcome)
        # The activities the activation starts here run now, ahead of its write: theirs is
        # written after it (a workflow has one item in flight), and if it never is, they are
        # fenced off (at least once, as after a crash). Meanwhile this slot is theirs. One
        # activation ahead at most: behind an earlier one still being written, they wait.
        ahead = entry.inflight == 0
        early = eager_claims(wf.id, item.children) if ahead else []
        for child in early:
            self._start(child)
        entry.inflight += 1
        self._writing += 1
        try:
            done = await self._send(item)
        except (asyncio.CancelledError, UnstorableOutcomeError):
            # Not written: what ran ahead of it is stopped, and a claim replays the workflow.
            self._abandon(early)
            self._drop_sticky(wf.id, entry)
            raise
        finally:
            entry.inflight -= 1
            self._writing -= 1
        held = self._sticky.get(wf.id) is entry
        if done.outcome not in ("waiting", "pending"):
            self._abandon(early)
        elif not ahead:
            for child in done.eager:
                self._start(child)
        if done.outcome in ("waiting", "pending"):
            self.metrics.activation_ran(wf.queue, time.monotonic() - started, None)
            return True
        if done.outcome == "claimed" and done.lease is not None:
            # The activation ends the workflow: apply it as the workflow's own claim would
            # (one that finds no copy here replays it).
            if held:
                entry.ready = activation
            self._start(
                dataclasses.replace(wf, lease=done.lease, resolutions=None, pickup_latency=None)
            )
            return True
        if held:
            # Ended, or (fallback, stale) the copy went ahead of what was written: a claim
            # replays it instead.
            self._drop_sticky(wf.id, entry)
        ended = done.outcome if done.outcome in _RUN_STATUSES else None
        if done.outcome != "stale":
            self.metrics.activation_ran(wf.queue, time.monotonic() - started, ended)
        if ended is not None:
            log.info("%s workflow %s id=%s", ended, wf.name, wf.id)
        return done.outcome != "stale"

    def _abandon(self, claims: list[Claimed]) -> None:
        """Stop activities run ahead of a write that did not happen (nothing records them)."""
        for c in claims:
            task = self._inflight.get(c.id)
            if task is not None and not task.done():
                self._abandoned.add(c.id)
                task.cancel()

    def _drop_sticky(self, workflow_id: str, entry: _Sticky) -> None:
        if self._sticky.get(workflow_id) is entry:
            del self._sticky[workflow_id]
        entry.instance.close()

    # ---- recording outcomes in batches ---------------------------------------------------

    async def _record(self, outcome: Outcome) -> bool:
        """Hand an outcome to the pump; True once recorded, False if the claim was lost."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outcomes.append((outcome, future))
        self._wake.set()
        self._writing += 1
        try:
            # Shielded: a shutdown cancel must not lose an outcome already decided.
            return await asyncio.shield(future)
        finally:
            self._writing -= 1

    # ---- notifications -------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        store = self.store
        assert store is not None
        backoff = 0.1
        while True:
            try:
                conn = await asyncpg.connect(store.dsn)
                await conn.add_listener(store.q.work_channel, self._on_work)
                await conn.add_listener(store.q.cancel_channel, self._on_cancel)
                await conn.add_listener(store.q.start_channel, self._on_start)
                # Held as long as this session lives: what makes this worker's offers good.
                while not await conn.fetchval(store.sql(Q.HOLD_OFFER_LOCK), self._lock_key):
                    self._lock_key = random.getrandbits(63)
                self._locked = True
                self._offer_due = 0.0
                self._listener = conn
                backoff = 0.1
                # Whatever was announced while we were not listening: look now.
                self._look = True
                self._wake.set()
                while not conn.is_closed():
                    await asyncio.sleep(self.settings.worker_poll_interval)
                    with contextlib.suppress(asyncio.TimeoutError):
                        # Shared with the handoff reads (one query at a time on a connection).
                        async with self._listener_lock:
                            await conn.execute("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "listener connection lost (%s); reconnecting in %.1f s",
                    codec_line(exc),
                    backoff,
                )
            self._locked = False
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _on_work(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if payload in self.queue_set:
            self._look = True
            self._wake.set()

    def _on_start(self, conn: object, pid: int, channel: str, payload: object) -> None:
        # A hint (any role that can connect may NOTIFY): the claim is read from the table
        # before anything runs, so a forged one runs, imports and learns nothing.
        execution_id = handed_over(str(payload), self.id)
        if execution_id is None or execution_id in self._inflight:
            return
        # The offer is used up: make another when idle again.
        self._offer_due = 0.0
        if self._free_slots() - self._claiming > 0:
            # The slot is taken now, while the claim is read.
            self._inflight[execution_id] = asyncio.create_task(
                self._take_handoff(execution_id), name=f"workflows-job-{execution_id}"
            )
            return
        # Handed over while this worker filled up or began to stop: back to any worker.
        task = asyncio.create_task(
            self._give_back(execution_id), name=f"workflows-give-back-{execution_id}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _take_handoff(self, execution_id: str) -> None:
        store = self.store
        assert store is not None
        try:
            listener = self._listener
            if listener is not None and not listener.is_closed():
                async with self._listener_lock:
                    c = await store.take_handoff(execution_id, self.id, listener)
            else:
                c = await store.take_handoff(execution_id, self.id)
        except _DB_ERRORS as exc:
            # If it was real, it stays running here unknown: the audit gives it back.
            log.warning(
                "reading the job handed over as %s failed (%s)", execution_id, codec_line(exc)
            )
            c = None
        except asyncio.CancelledError:
            self._inflight.pop(execution_id, None)
            raise
        if c is None:
            self._inflight.pop(execution_id, None)
            self._wake.set()
            return
        self._claims[c.id] = c
        await self._execute(c)

    async def _give_back(self, execution_id: str) -> None:
        store = self.store
        assert store is not None
        try:
            # Fenced on this worker and the handoff's lease: a forged id releases nothing.
            await store.release_id(execution_id, 1, self.id)
        except _DB_ERRORS as exc:
            # Still running here as far as the database knows: the audit releases it.
            log.warning("handing back %s failed (%s)", execution_id, codec_line(exc))

    def _on_cancel(self, conn: object, pid: int, channel: str, payload: object) -> None:
        # A hint, like the start channel: the table says whether a cancel was asked for.
        c = self._claims.get(str(payload))
        if c is None:
            return
        task = asyncio.create_task(self._check_cancel(c), name=f"workflows-cancel-{c.id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_cancel(self, c: Claimed) -> None:
        store = self.store
        assert store is not None
        try:
            requested = await store.cancel_requested(c, self.id)
        except _DB_ERRORS as exc:
            log.warning("checking a cancel of %s failed (%s)", c.id, codec_line(exc))
            return
        task = self._inflight.get(c.id)
        if requested and task is not None and self._claims.get(c.id) is c:
            self._cancel_requested.add(c.id)
            task.cancel()

    # ---- timers, deadlines, heartbeats, recovery -----------------------------------------

    async def _maintenance_loop(self) -> None:
        store = self.store
        assert store is not None
        last_beat = 0.0
        while True:
            try:
                fired = await store.fire_due_steps()
                expired = await store.expire_workflows()
                if expired:
                    log.info("failed %d workflows past their timeout", expired)
                if fired:
                    self._look = True
                    self._wake.set()
                now = time.monotonic()
                if now - last_beat >= self.settings.worker_heartbeat_interval:
                    last_beat = now
                    await self._beat()
            except asyncio.CancelledError:
                raise
            except _DB_ERRORS as exc:
                log.warning("maintenance failed (%s)", codec_line(exc))
            except Exception:
                # Were this loop to end, timers would stop firing and dead peers would stay
                # unrecovered: log and go on.
                log.exception("maintenance failed")
            await asyncio.sleep(
                min(self.settings.worker_poll_interval, self.settings.worker_heartbeat_interval)
            )

    async def _beat(self) -> None:
        """Each heartbeat interval: recover dead peers, audit, sample the gauges.

        The heartbeat itself is beaten from a thread (watchdog.HeartbeatThread), so a loop
        blocked by a job does not get this worker declared dead while it still runs.
        """
        store = self.store
        heart = self._heart
        assert store is not None and heart is not None
        now = time.monotonic()
        timeout = self.settings.worker_heartbeat_timeout
        dead: list[dict[str, Any]] = []
        outcomes: list[Recovered] = []
        requeued: list[str] = []
        # Judge nobody until this worker's own beats have been on time for a whole timeout
        # (the time a live peer needs to beat again): after the database was away or this
        # process paused, its peers perhaps could not beat either; else a database restart
        # declares every worker dead.
        last = heart.last_beat
        if last is not None and now - last <= timeout / 2 and now - heart.steady_since >= timeout:
            dead, outcomes, requeued = await store.recover(self.id, timeout)
        for worker in dead:
            self.metrics.worker_recovered()
            log.warning(
                "recovered dead worker %s (%s pid %s)",
                worker["worker_id"][:8],
                worker["hostname"],
                worker["pid"],
            )
        if outcomes or requeued:
            log.warning(
                "recovered %d executions (%d workflows) from lost workers",
                len(outcomes) + len(requeued),
                len(requeued),
            )
            for row in outcomes:
                self.metrics.execution_recovered(row.queue, row.kind)
            for queue in requeued:
                self.metrics.execution_recovered(queue, "workflow")
            self._look = True
            self._wake.set()
        await self._audit()
        self.metrics.set_stuck_threads(self._pool.stuck)
        self.metrics.set_workers_alive(
            await store.workers_alive(self.settings.worker_heartbeat_timeout)
        )
        self.metrics.set_queue_depth(await store.queue_depths(self.queues))

    async def _audit(self) -> None:
        """Free what the database says runs here but nothing here runs.

        A claim or activation committed whose reply never came back (the connection cut just
        then) leaves executions running under this worker, which beats on, so no peer would
        ever recover them. Seen on two heartbeats in a row (a reply in transit is started
        long before the next), each goes back to pending, the attempt not counted.
        """
        store = self.store
        assert store is not None
        running = await store.running_here(self.id)
        orphans = {(i, lease) for i, lease in running if i not in self._inflight}
        stranded, self._suspects = orphans & self._suspects, orphans
        for execution_id, lease in sorted(stranded):
            if execution_id in self._inflight:
                continue
            self._suspects.discard((execution_id, lease))
            if await store.release_id(execution_id, lease, self.id):
                log.warning(
                    "released %s: it was running here with nothing running it (a reply lost)",
                    execution_id,
                )


def _backoff(settings: Settings, attempt: int) -> float:
    # Capped exponent: retries may number up to a million, and 2.0 ** 1024 overflows.
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2 ** min(attempt - 1, 64))
    # Jitter spreads the retries of many executions that failed together.
    return float(ceiling * random.uniform(0.5, 1.0))


def _error(exc: BaseException, type_name: str) -> dict[str, Any]:
    return {"type": type_name, "message": codec.safe_str(exc)}


_MAX_BATCHES = 2
_RUN_STATUSES = frozenset({"completed", "failed", "cancelled", "retried"})


def codec_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
