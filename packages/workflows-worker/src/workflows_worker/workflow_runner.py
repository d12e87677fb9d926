"""Running workflows: each claim to its next activation, written with the worker's others, and
suspended workflows kept in memory (the sticky cache) to go on from an activity's outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from workflows import codec, tracing
from workflows.config import Settings
from workflows.errors import SerializationError
from workflows.history import Activation, StepRecord
from workflows.records import ActivationResult, Advance, Claimed, Plan, eager_claims, plan
from workflows.replay import WorkflowInstance
from workflows.store import WorkerStore
from workflows_worker.batches import ActivationBatches
from workflows_worker.clock import DbClock
from workflows_worker.errors import UnstorableOutcomeError, unstorable
from workflows_worker.executor import error_of
from workflows_worker.imports import FunctionNotFound, ImportPolicy
from workflows_worker.logs import execution_fields, get_logger
from workflows_worker.metrics import FINAL_STATUSES, WorkerMetrics
from workflows_worker.slots import Slots

log = get_logger(__name__)

_NO_PLAN = Plan([], [], [])
# Activations of one workflow run on activities' outcomes while earlier ones are still being
# written, whose own activities start at once. One ahead made a sequential workflow wait for a
# commit every second step; a bound keeps a workflow of instant steps from running far ahead
# of what is durable (all of it is run again after a failed write).
MAX_AHEAD = 16


@dataclass
class Sticky:
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


class _ActivityOutcome(NamedTuple):
    """An activity's final outcome, written with the activation it led to."""

    claimed: Claimed
    status: str
    result: str | None
    error: str | None


class StickyCache:
    """Suspended workflows in memory, the least recently suspended evicted past ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, Sticky] = OrderedDict()

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, workflow_id: str) -> Sticky | None:
        return self._entries.get(workflow_id)

    def take(self, workflow_id: str) -> Sticky | None:
        return self._entries.pop(workflow_id, None)

    def keep(self, workflow_id: str, entry: Sticky) -> None:
        if self._size <= 0:
            entry.instance.close()
            return
        self._entries[workflow_id] = entry
        while len(self._entries) > self._size:
            _, evicted = self._entries.popitem(last=False)
            evicted.instance.close()

    def drop(self, workflow_id: str, entry: Sticky) -> None:
        if self._entries.get(workflow_id) is entry:
            del self._entries[workflow_id]
        entry.instance.close()

    def close(self) -> None:
        for entry in self._entries.values():
            entry.instance.close()
        self._entries.clear()


class WorkflowRunner:
    """Runs claimed workflows and resumes the ones held here on their activities' outcomes.

    ``start`` runs a claim (the activities an activation claims for this worker, and a
    workflow's own claim handed back by a batched write). ``versions`` is the newest version
    of each workflow known here; a claim written by newer code raises it, so the next claims
    leave such workflows to newer workers.
    """

    def __init__(
        self,
        store: WorkerStore,
        worker_id: str,
        settings: Settings,
        *,
        queues: frozenset[str],
        slots: Slots,
        activations: ActivationBatches,
        imports: ImportPolicy,
        metrics: WorkerMetrics,
        start: Callable[[Claimed], None],
        versions: dict[str, int],
        eager_queues: Callable[[], frozenset[str]] | None = None,
        clock: DbClock | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._settings = settings
        # workflows.now() reads the database's time through it (see clock.py).
        self._clock = clock or DbClock(store)
        # The queues whose activities may run here ahead of their write (see flow.py).
        self._eager_queues = eager_queues or (lambda: queues)
        self._slots = slots
        self._activations = activations
        self._imports = imports
        self._metrics = metrics
        self._start = start
        self._versions = versions
        self._sticky = StickyCache(settings.worker_sticky_cache)

    def holds(self, workflow_id: str | None) -> bool:
        """Whether the workflow is held in memory here."""
        return workflow_id in self._sticky

    async def written(self, workflow_id: str) -> None:
        """Until no activation of the workflow is waiting to be written or being written."""
        await self._activations.written(workflow_id)

    def versions(self) -> dict[str, int]:
        return self._versions

    def close(self) -> None:
        self._sticky.close()

    # ---- a claimed workflow -----------------------------------------------------------------

    async def run(self, c: Claimed) -> str:
        try:
            fn = self._imports.resolve(c.name, "workflow")
        except FunctionNotFound as exc:
            return await self.fail(c, error_of(exc, "FunctionNotFound"))
        if fn.version is not None and c.version is not None and c.version > fn.version:
            # Written by newer code: leave it for a worker that has that code.
            self._versions[c.name] = fn.version
            await self._store.release(c, self._worker_id, delay=0.0)
            log.info(
                "left workflow %s id=%s (version %d) for a worker newer than version %d",
                c.name,
                c.id,
                c.version,
                fn.version,
            )
            return "released"
        entry = self._sticky.take(c.id)
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
                try:
                    resolutions = self._decoded(c.resolutions or ())
                except SerializationError as exc:
                    instance.close()
                    return await self.fail(c, codec.error_payload(exc, with_traceback=False))
                activation = instance.activate(resolutions)
        else:
            if entry is not None:
                entry.instance.close()
            # The first claim of a workflow (lease 1) has no history to read.
            history = [] if c.lease == 1 else await self._store.load_history(c.id)
            try:
                args, kwargs = codec.current(self._settings).decode_call(c.args)
                instance, activation = WorkflowInstance.replay(
                    fn.fn,
                    args,
                    kwargs,
                    self._decoded(history),
                    name=c.name,
                    max_payload_bytes=self._settings.max_payload_bytes,
                    seed=c.id,
                    clock=self._clock.now,
                )
            except Exception as exc:
                # Arguments that do not fit the function (a signature changed by a deploy)
                # fail the same way on every worker: released, it would come back forever.
                return await self.fail(c, codec.error_payload(exc))
            if history:
                log.info("replayed workflow %s id=%s from %d steps", c.name, c.id, len(history))
        status, result, error = self._ending(activation)
        # A workflow left waiting: the activities its activation starts here run now, ahead
        # of its write, as on an activity's outcome (advance): the copy is kept at once, so
        # their outcomes resume it; if the write does not happen they are stopped.
        early: list[Claimed] = []
        ahead: Sticky | None = None
        try:
            item = self._item(c, activation, status, result, error)
            if status == "blocked" and self._settings.worker_sticky_cache > 0:
                early = eager_claims(c.id, item.plan.children, item.plan.trace_context)
            if early:
                ahead = Sticky(instance, c, inflight=1)
                self._sticky.keep(c.id, ahead)
                for child in early:
                    self._start(child)
            try:
                applied = await self._apply(c, activation, status, result, error, item)
            except BaseException:
                self._slots.abandon(early)
                raise
            finally:
                if ahead is not None:
                    ahead.inflight -= 1
        except SerializationError as exc:
            # A step's arguments over WORKFLOWS_MAX_PAYLOAD_BYTES: as deterministic as the code.
            instance.close()
            return await self.fail(c, codec.error_payload(exc, with_traceback=False))
        except UnstorableOutcomeError as exc:
            # A value the database refused (its result, a step's arguments): as deterministic.
            self._forget(c.id, ahead, instance)
            return await self.fail(c, unstorable(exc))
        except asyncio.CancelledError:
            self._forget(c.id, ahead, instance)
            raise
        if applied.status not in ("waiting", "pending"):
            self._slots.abandon(early)
        if applied.status is None:
            self._forget(c.id, ahead, instance)
            log.warning(
                "discarded an activation of workflow %s id=%s: its claim was taken over",
                c.name,
                c.id,
            )
            return "stale"
        if applied.status in ("waiting", "pending"):
            if ahead is None:
                self._sticky.keep(c.id, Sticky(instance, c))
        else:
            self._forget(c.id, ahead, instance)
        if not early:
            for eager in applied.eager:
                self._start(eager)
        if applied.status in ("completed", "failed", "cancelled"):
            if error is not None and applied.status == "failed":
                tracing.failed(self._settings, error)
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

    def _forget(self, workflow_id: str, entry: Sticky | None, instance: WorkflowInstance) -> None:
        """Close a copy, taking it out of the cache if it was kept there ahead of a write."""
        if entry is not None:
            self._sticky.drop(workflow_id, entry)
        else:
            instance.close()

    async def fail(self, c: Claimed, error: dict[str, Any]) -> str:
        """Fail a workflow for good, before any of its code ran to an activation."""
        applied = await self._store.apply_activation(
            c,
            self._worker_id,
            number=0,
            delivered=(),
            plan=_NO_PLAN,
            status="failed",
            result=None,
            error=error,
        )
        if applied.status is None:
            log.warning(
                "discarded an activation of workflow %s id=%s: its claim was taken over",
                c.name,
                c.id,
            )
            return "stale"
        tracing.failed(self._settings, error)
        log.warning(
            "failed workflow %s id=%s: %s: %s",
            c.name,
            c.id,
            error.get("type"),
            error.get("message"),
        )
        return applied.status

    async def _apply(
        self,
        c: Claimed,
        activation: Activation,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
        item: Advance | None = None,
    ) -> ActivationResult:
        """Write the activation of a claimed workflow, batched with the worker's others."""
        if item is None:
            item = self._item(c, activation, status, result, error)
        done = await self._activations.send(item)
        if done.outcome == "claimed":
            # It ends the workflow while executions it started still run: closing those is
            # more than the batch does.
            return await self._store.apply_activation(
                c,
                self._worker_id,
                number=activation.number,
                delivered=activation.delivered,
                plan=tracing.stamp(
                    self._settings,
                    plan(self._settings, c.queue, activation.number, activation.commands),
                ),
                status=status,
                result=result,
                error=error,
            )
        return ActivationResult(None if done.outcome == "stale" else done.outcome, done.eager)

    # ---- one commit per step: an activity's outcome with its workflow's next activation ---

    async def advance(
        self, c: Claimed, status: str, result: str | None, error: str | None
    ) -> bool | None:
        """Hand an activity's final outcome to its workflow held here, and write both at once.

        The workflow's code runs on the outcome right away (the value decoded from the very
        JSON text stored, so a replay reads back the same), then the outcome and the resulting
        activation go to the database together, in the next batch. None: not possible here
        (the workflow is not held, or is busy): record the outcome alone.
        """
        entry = self._resumable(c, status)
        if entry is None:
            return None
        # The activation is the workflow's: its span continues the context on the workflow's
        # row, not the activity's span this runs in.
        with tracing.attempt(self._settings, entry.claimed):
            return await self._advance(c, entry, status, result, error)

    def _resumable(self, c: Claimed, status: str) -> Sticky | None:
        """The copy held here that an activity's outcome can go on with, if there is one."""
        if c.kind != "activity" or c.parent_id is None or status not in ("completed", "failed"):
            return None
        entry = self._sticky.get(c.parent_id)
        if (
            entry is None
            or entry.ready is not None
            or entry.instance.done
            or not entry.instance.is_pending(c.parent_seq)
        ):
            return None
        return entry

    async def _advance(
        self, c: Claimed, entry: Sticky, status: str, result: str | None, error: str | None
    ) -> bool | None:
        assert c.parent_seq is not None  # _resumable found it among the pending steps
        try:
            value = codec.current(self._settings).decode(result)
        except SerializationError:
            # The claim that follows fails the workflow, saying why.
            return None
        record = StepRecord(
            seq=c.parent_seq,
            kind="activity",
            name=c.name,
            status="completed" if status == "completed" else "failed",
            result=value,
            error=codec.decode(error),
        )
        wf = entry.claimed
        started = time.monotonic()
        try:
            activation = entry.instance.activate([record])
        except Exception:
            log.exception(
                "internal error resuming workflow %s id=%s",
                wf.name,
                wf.id,
                extra=execution_fields(wf),
            )
            self._sticky.drop(wf.id, entry)
            return None
        outcome = _ActivityOutcome(c, status, result, error)
        try:
            item = self._item(wf, activation, *self._ending(activation), outcome)
        except SerializationError as exc:
            # A step's arguments over WORKFLOWS_MAX_PAYLOAD_BYTES: as deterministic as the code.
            activation = Activation(
                [],
                "failed",
                error=codec.error_payload(exc, with_traceback=False),
                number=activation.number,
                delivered=activation.delivered,
            )
            item = self._item(wf, activation, *self._ending(activation), outcome)
        # The activities the activation starts here run now, ahead of its write: theirs is
        # written after it (a workflow has one item in flight), and if it never is, they are
        # fenced off (at least once, as after a crash). Meanwhile this slot is theirs. Up to
        # MAX_AHEAD activations ahead: the items that pile up behind the one being written go
        # together in the workflow's next batch (one commit for several steps), and each is
        # fenced on the one before (a step whose activity's row was never written is stale).
        ahead = entry.inflight < MAX_AHEAD
        early = eager_claims(wf.id, item.plan.children, item.plan.trace_context) if ahead else []
        for child in early:
            self._start(child)
        entry.inflight += 1
        try:
            with self._slots.writing():
                done = await self._activations.send(item)
        except (asyncio.CancelledError, UnstorableOutcomeError):
            # Not written: what ran ahead of it is stopped, and a claim replays the workflow.
            self._slots.abandon(early)
            self._sticky.drop(wf.id, entry)
            raise
        finally:
            entry.inflight -= 1
        held = self._sticky.get(wf.id) is entry
        if done.outcome not in ("waiting", "pending"):
            self._slots.abandon(early)
        elif not ahead:
            for child in done.eager:
                self._start(child)
        if done.outcome in ("waiting", "pending"):
            self._metrics.activation_ran(wf.queue, time.monotonic() - started, "suspended")
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
            self._sticky.drop(wf.id, entry)
        ended = done.outcome if done.outcome in FINAL_STATUSES else None
        if done.outcome != "stale":
            # Not ended: the fallback, whose activation a claim replays (discarded here).
            self._metrics.activation_ran(wf.queue, time.monotonic() - started, ended or "discarded")
        if ended == "failed" and activation.error is not None:
            tracing.failed(self._settings, activation.error)
        if ended is not None:
            # In the activity's task: the record is about its workflow.
            log.info("%s workflow %s id=%s", ended, wf.name, wf.id, extra=execution_fields(wf))
        return done.outcome != "stale"

    def _decoded(self, records: Sequence[StepRecord]) -> Sequence[StepRecord]:
        """Step records with their results decoded by this process's codec (the store hands
        them over as stored JSON): on every replay, the value the stored text decodes to.
        Raises SerializationError (an unregistered type, a payload it cannot unwrap)."""
        payloads = codec.current(self._settings)
        if payloads is codec.DEFAULT:
            # Plain JSON is its own value; only an envelope needs a word (it raises).
            for r in records:
                if type(r.result) is dict and codec.WRAPPED_KEY in r.result:
                    payloads.decode_stored(r.result)
            return records
        return [
            r
            if r.result is None or r.kind == "version"
            else dataclasses.replace(r, result=payloads.decode_stored(r.result))
            for r in records
        ]

    # ---- an activation as what is written ------------------------------------------------

    def _ending(self, activation: Activation) -> tuple[str, str | None, dict[str, Any] | None]:
        """The workflow status an activation leads to, with its result as JSON, or error."""
        status, error = activation.status, activation.error
        result: str | None = None
        if status == "completed":
            try:
                result = codec.current(self._settings).encode(
                    activation.result,
                    what="workflow result",
                    max_bytes=self._settings.max_payload_bytes,
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
        activity: _ActivityOutcome | None = None,
    ) -> Advance:
        """The activation as a batch item; raises SerializationError for a step's arguments."""
        return Advance(
            workflow=wf,
            number=activation.number,
            delivered=list(activation.delivered),
            outcome=status,
            result=result,
            error=None if error is None else codec.encode(error),
            plan=tracing.stamp(
                self._settings,
                plan(
                    self._settings,
                    wf.queue,
                    activation.number,
                    activation.commands,
                    self._eager_queues(),
                    self._slots.eager(),
                ),
            ),
            activity=None if activity is None else activity.claimed,
            act_status=None if activity is None else activity.status,
            act_result=None if activity is None else activity.result,
            act_error=None if activity is None else activity.error,
        )
