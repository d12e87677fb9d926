"""Running one execution: a job or activity's code under its timeout, its retries, its cancel."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from workflows import codec, tracing
from workflows.config import Settings
from workflows.errors import SerializationError
from workflows.records import Claimed, Outcome
from workflows.store import WorkerStore
from workflows_worker.batches import OutcomeQueue
from workflows_worker.deadlines import Deadlines
from workflows_worker.errors import UnstorableOutcomeError, first_line, unstorable
from workflows_worker.imports import FunctionNotFound, ImportPolicy
from workflows_worker.logs import bind_execution, get_logger, unbind
from workflows_worker.metrics import WorkerMetrics, attempt_outcome
from workflows_worker.slots import Slots
from workflows_worker.sync_pool import SyncPool
from workflows_worker.wakeup import Wakeup

log = get_logger(__name__)


class Workflows(Protocol):
    """What the executor asks of the part that runs workflows (workflow_runner)."""

    async def run(self, c: Claimed) -> str:
        """Run a claimed workflow to its next activation; the status it led to."""
        ...

    async def fail(self, c: Claimed, error: dict[str, Any]) -> str:
        """Fail a workflow for good, before any of its code ran to an activation."""
        ...

    async def advance(
        self, c: Claimed, status: str, result: str | None, error: str | None
    ) -> bool | None:
        """Hand an activity's final outcome to its workflow held here and write both at once;
        None when not possible here (record the outcome alone)."""
        ...

    async def written(self, workflow_id: str) -> None:
        """Until no activation of the workflow is waiting to be written or being written."""
        ...


class Executor:
    """Runs claims in tasks of their own, each in a slot of ``slots`` until it ends."""

    def __init__(
        self,
        store: WorkerStore,
        worker_id: str,
        settings: Settings,
        *,
        slots: Slots,
        outcomes: OutcomeQueue,
        workflows: Workflows,
        imports: ImportPolicy,
        pool: SyncPool,
        metrics: WorkerMetrics,
        wakeup: Wakeup,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._settings = settings
        self._slots = slots
        self._outcomes = outcomes
        self._workflows = workflows
        self._imports = imports
        self._pool = pool
        self._metrics = metrics
        self._wakeup = wakeup
        self.executed = 0
        self._deadlines = Deadlines()
        # Runs whose code ran past its timeout: their attempts ended timed_out.
        self._timed_out: set[str] = set()
        # WORKFLOWS_TRACING=on without opentelemetry-api: refused at start, not per attempt.
        tracing.tracer(settings)

    def start(self, c: Claimed) -> None:
        task = asyncio.create_task(self.execute(c), name=f"workflows-{c.kind}-{c.id}")
        self._slots.add(c.id, task, c, frees_itself=True)

    def cancel_all(self) -> int:
        """Cancel every run (the shutdown's grace is over): each gives its execution back."""
        return self._slots.cancel_all()

    async def execute(self, c: Claimed) -> None:
        """Run ``c`` in the slot it holds (the task calling this), and free the slot after."""
        # Its own task: every record logged in it is about ``c``.
        token = bind_execution(c)
        try:
            with tracing.attempt(self._settings, c):
                await self._execute(c)
        except BaseException:
            # Raised around _execute (by the span, say): the slot it frees must go too.
            task = asyncio.current_task()
            if task is not None:
                self._slots.ended(c.id, task)
            raise
        finally:
            unbind(token)

    async def _execute(self, c: Claimed) -> None:
        started = time.monotonic()
        self._metrics.execution_started(c.queue, c.kind, c.pickup_latency)
        status = "failed"
        try:
            if self._slots.cancelled_waiting(c.id):
                # Claimed ahead and cancelled before a slot freed: none of its code runs.
                status = await self._on_cancelled(c)
            elif c.kind == "workflow":
                status = await self._workflows.run(c)
            else:
                status = await self._run_function(c)
        except asyncio.CancelledError:
            status = await self._on_cancelled(c)
        except Exception as exc:
            if self._store.is_transient(exc):
                # Typically the database went away mid-activation: give it back (uncounted, a
                # few times in a row at most).
                log.warning("database error running %s %s (%s)", c.kind, c.id, first_line(exc))
                status = "released"
                await self.hand_back(c, delay=1.0)
            else:
                # A fault of this worker's, not of the code it ran: the attempt still counts,
                # or the same execution could come back here forever.
                log.exception("internal error running %s %s", c.kind, c.id)
                status = await self._internal_error(c, exc, started)
        finally:
            self._slots.remove(c.id)
            self.executed += 1
            elapsed = time.monotonic() - started
            timed_out = c.id in self._timed_out
            self._timed_out.discard(c.id)
            outcome, final = attempt_outcome(status, timed_out)
            self._metrics.attempt_ended(c.queue, c.kind, outcome, elapsed, final)
            self._wakeup.wake()

    async def _internal_error(self, c: Claimed, exc: Exception, started: float) -> str:
        error = {"type": "InternalError", "message": f"worker error: {codec.safe_str(exc)}"}
        try:
            if c.kind == "workflow":
                return await self._workflows.fail(c, error)
            return await self._fail(c, error, started, isolated=True)
        except Exception:
            log.exception("recording the failure of %s %s failed", c.kind, c.id)
            await self.hand_back(c, delay=1.0)
            return "released"

    async def hand_back(self, c: Claimed, delay: float) -> None:
        """Release ``c`` (uncounted, a few times in a row at most), however long the database
        is away.

        This worker stays alive and beating, so no peer would ever recover an execution it
        left running: it must give it back.
        """
        backoff = 0.1
        while True:
            try:
                await self._store.release(c, self._worker_id, delay=delay)
                return
            except Exception as exc:
                if not self._store.is_transient(exc):
                    log.exception("handing %s %s back failed", c.kind, c.id)
                    return
                log.warning(
                    "handing %s %s back failed (%s); retrying in %.1f s",
                    c.kind,
                    c.id,
                    first_line(exc),
                    backoff,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _on_cancelled(self, c: Claimed) -> str:
        why = self._slots.why_cancelled(c.id)
        if why == "abandoned":
            log.debug("dropped activity %s id=%s: run ahead of a write that failed", c.name, c.id)
            return "stale"
        if why == "requested":
            error = {"type": "ExecutionCancelledError", "message": "cancelled on request"}
            await self._record(
                Outcome(
                    c.id,
                    c.lease,
                    "cancelled",
                    error=codec.encode(error),
                    parent_id=c.parent_id,
                ),
                c.parent_id,
            )
            log.info("cancelled %s %s id=%s", c.kind, c.name, c.id)
            return "cancelled"
        # Shutdown past its grace: give the execution back (uncounted, a few times at most).
        try:
            await self._store.release(c, self._worker_id)
        except Exception as exc:
            if not self._store.is_transient(exc):
                raise
        log.info("released %s %s id=%s back to pending", c.kind, c.name, c.id)
        return "released"

    async def _run_function(self, c: Claimed) -> str:
        log.info("started %s %s id=%s attempt=%d", c.kind, c.name, c.id, c.attempts)
        started = time.monotonic()
        if c.attempts > c.max_retries + 1:
            # Given back so often that the attempts counted (see the store's release) passed
            # the limit.
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
            return await self._finish(c, "failed", None, error_of(exc, "FunctionNotFound"), started)
        payloads = codec.current(self._settings)
        try:
            args, kwargs = payloads.decode_call(c.args)
        except SerializationError as exc:
            # An unregistered type, a payload encrypted for another key: the same on every
            # attempt, so failed for good now.
            return await self._finish(
                c, "failed", None, error_of(exc, "SerializationError"), started
            )
        except Exception as exc:
            # Arguments written by hand that are no call: a failure like its code's would be.
            return await self._fail(c, codec.error_payload(exc), started)
        # Expired by the worker's Deadlines, not a loop timer of its own (see deadlines.py).
        deadline = asyncio.Timeout(None)
        seconds = c.timeout
        task = asyncio.current_task()
        try:
            async with deadline:
                if seconds is not None:
                    self._deadlines.start(deadline, seconds)
                try:
                    if fn.is_async:
                        value = await fn.fn(*args, **kwargs)
                    else:
                        value = await self._pool.run(fn.fn, *args, **kwargs)
                finally:
                    if seconds is not None:
                        self._deadlines.end(deadline, seconds)
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
                self._timed_out.add(c.id)
                timed_out = TimeoutError(f"timed out after {c.timeout} s")
                return await self._fail(c, error_of(timed_out, "TimeoutError"), started)
            return await self._fail(c, codec.error_payload(exc), started)
        try:
            text = payloads.encode(value, what="result", max_bytes=self._settings.max_payload_bytes)
        except Exception as exc:
            # Counted like any failure: a result need not come out the same on a retry.
            return await self._fail(c, codec.error_payload(exc, with_traceback=False), started)
        return await self._finish(c, "completed", text, None, started)

    async def _fail(
        self, c: Claimed, error: dict[str, Any], started: float, *, isolated: bool = False
    ) -> str:
        """A failed attempt: retried after a backoff while retries remain, else failed.

        ``isolated``: the error is already the clean one of an outcome the database refused;
        refused again, it is not this outcome's value but the worker's fault.
        """
        if c.attempts > c.max_retries:
            return await self._finish(c, "failed", None, error, started, isolated=isolated)
        tracing.failed(self._settings, error)
        delay = backoff(self._settings, c.attempts)
        try:
            ok = await self._record(
                Outcome(c.id, c.lease, "pending", error=codec.encode(error), retry_delay=delay),
                c.parent_id,
            )
        except UnstorableOutcomeError as exc:
            if isolated:
                raise
            return await self._fail(c, unstorable(exc), started, isolated=True)
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
            extra={"duration": time.monotonic() - started},
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
        if error is not None:
            tracing.failed(self._settings, error)
        try:
            # Only an activity's outcome can go on with its workflow: no call for a job's.
            ok = (
                await self._workflows.advance(c, status, result, error_text)
                if c.parent_id is not None
                else None
            )
            if ok is None:
                ok = await self._record(
                    Outcome(
                        c.id,
                        c.lease,
                        status,
                        result=result,
                        error=error_text,
                        parent_id=c.parent_id,
                    ),
                    c.parent_id,
                )
        except UnstorableOutcomeError as exc:
            if isolated:
                raise
            # The database refused this outcome's value: the attempt fails with a clean error.
            return await self._fail(c, unstorable(exc), started, isolated=True)
        if not ok:
            log.warning(
                "discarded the result of %s %s id=%s: its claim was taken over",
                c.kind,
                c.name,
                c.id,
            )
            return "stale"
        if not log.isEnabledFor(logging.INFO):
            # Filtered out: not even the record's arguments made.
            return status
        elapsed = time.monotonic() - started
        if status == "failed" and error is not None:
            log.info(
                "failed %s %s id=%s after %d attempts in %.3f s: %s: %s",
                c.kind,
                c.name,
                c.id,
                c.attempts,
                elapsed,
                error.get("type"),
                error.get("message"),
                extra={"duration": elapsed},
            )
        else:
            log.info(
                "%s %s %s id=%s in %.3f s",
                status,
                c.kind,
                c.name,
                c.id,
                elapsed,
                extra={"duration": elapsed},
            )
        return status

    async def _record(self, outcome: Outcome, parent_id: str | None = None) -> bool:
        """Hand an outcome to the pump; True once recorded, False if the claim was lost.

        ``parent_id``: an activity's workflow. An activity may have started ahead of the write
        that admits it (workflow_runner): its outcome, fenced on that row, waits for the
        workflow's writes, or it would be refused as stale (a retry lost, an attempt uncounted).
        """
        with self._slots.writing():
            if parent_id is not None:
                await self._workflows.written(parent_id)
            return await self._outcomes.record(outcome)


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, capped, jittered."""
    # Capped exponent: retries may number up to a million, and 2.0 ** 1024 overflows.
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2 ** min(attempt - 1, 64))
    # Jitter spreads the retries of many executions that failed together.
    return float(ceiling * random.uniform(0.5, 1.0))


def error_of(exc: BaseException, type_name: str) -> dict[str, Any]:
    return {"type": type_name, "message": codec.safe_str(exc)}
