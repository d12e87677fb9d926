"""What a worker and its store hand each other: claims, outcomes, activations, recoveries.

Plain dataclasses, so the worker never reads a database row or a tuple by position, and a
store other than PostgreSQL could serve a worker by returning the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workflows import codec
from workflows.config import Settings
from workflows.history import (
    RecordMarker,
    RecordVersion,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepCommand,
    StepRecord,
    WaitSignal,
)


@dataclass(frozen=True)
class Claimed:
    """One execution a worker now owns, until it records an outcome under ``lease``."""

    id: str
    kind: str
    name: str
    queue: str
    args: str
    attempts: int
    max_retries: int
    timeout: float | None
    lease: int
    version: int | None
    wakeups: int
    parent_id: str | None
    deadline: datetime | None
    pickup_latency: float | None
    parent_seq: int | None = None
    # A workflow's resolutions not yet handed to its code: all a copy in memory needs.
    resolutions: list[StepRecord] | None = None
    # The W3C carrier (JSON text) its attempt's span continues (workflows.tracing).
    trace_context: str | None = None


@dataclass(frozen=True)
class Outcome:
    """The end of one attempt of a job or activity, recorded only while its claim holds."""

    id: str
    lease: int
    status: str  # completed | failed | cancelled | pending (a retry)
    result: str | None = None
    error: str | None = None
    retry_delay: float | None = None
    # The workflow an activity belongs to: its worker may resume it straight away. The store
    # records an ending outcome without one in a lighter statement that resolves no step.
    parent_id: str | None = None


@dataclass(frozen=True)
class StepRow:
    """A step an activation writes into its workflow's history."""

    seq: int
    kind: str
    name: str
    status: str
    execution_id: str | None = None
    # Timers and signal timeouts: due this many seconds after the write.
    seconds: float | None = None
    result: str | None = None
    delivered_in: int | None = None


@dataclass(frozen=True)
class ChildRow:
    """An activity or child workflow an activation starts."""

    id: str
    kind: str  # activity | workflow
    name: str
    queue: str
    priority: int
    args: str
    max_retries: int
    timeout: float | None
    version: int | None
    workflow_timeout: float | None
    seq: int
    # Claimed by the writing worker in the same write (it runs the activity itself).
    eager: bool
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_key: str | None = None


@dataclass(frozen=True)
class Plan:
    """An activation's commands as what the store writes."""

    steps: list[StepRow]
    children: list[ChildRow]
    signals: list[str]
    # The activation span's W3C carrier (JSON text), written on each child's row.
    trace_context: str | None = None


@dataclass(frozen=True)
class ActivationResult:
    """What applying an activation did: ``None`` status when the claim had been lost."""

    status: str | None
    eager: list[Claimed] = field(default_factory=list)


@dataclass(frozen=True)
class Advance:
    """One workflow activation for a batched write (``WorkerStore.advance``).

    Either of a workflow claimed by the worker (``activity`` None, fenced on the claim's
    lease), or run on an activity's final outcome by the worker's copy of the workflow
    (``activity`` and its ``act_*`` outcome, fenced on the copy's lease and wakeups).
    """

    workflow: Claimed
    number: int
    delivered: list[int]
    outcome: str  # blocked | completed | failed
    result: str | None
    error: str | None
    plan: Plan
    activity: Claimed | None = None
    act_status: str | None = None  # completed | failed
    act_result: str | None = None
    act_error: str | None = None


@dataclass(frozen=True)
class Advanced:
    """What a batched write did with one :class:`Advance`."""

    # stale | fallback | claimed, or the workflow's new status (waiting, pending, completed...)
    outcome: str
    lease: int | None = None
    eager: list[Claimed] = field(default_factory=list)


@dataclass(frozen=True)
class Recovered:
    id: str
    kind: str
    queue: str
    # What recovery made it: pending (to run again), or its final status (failed: no retry
    # left; cancelled: a cancel was requested while it ran).
    status: str = "pending"


@dataclass(frozen=True)
class DeadWorker:
    worker_id: str
    hostname: str
    pid: int


@dataclass(frozen=True)
class Recovery:
    """What taking over the work of dead peers did."""

    dead: list[DeadWorker] = field(default_factory=list)
    # Jobs and activities retried or failed, and the queues of workflows made runnable again.
    recovered: list[Recovered] = field(default_factory=list)
    workflow_queues: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Registration:
    """Who a worker is, as its heartbeat row says."""

    hostname: str
    pid: int
    queues: tuple[str, ...]
    code_version: str


def plan(
    settings: Settings,
    workflow_queue: str,
    number: int,
    commands: Sequence[StepCommand],
    eager_queues: frozenset[str] = frozenset(),
    eager_slots: int = 0,
) -> Plan:
    """The rows activation ``number`` writes for ``commands``.

    An activity on one of ``eager_queues`` is claimed by the writing worker in the same write,
    for up to ``eager_slots`` of them, unless a concurrency or rate key may hold it back (the
    worker leaves out the queues it knows to be limited). Raises ``SerializationError`` for
    arguments over ``settings.max_payload_bytes``.
    """
    steps: list[StepRow] = []
    children: list[ChildRow] = []
    signals: list[str] = []
    for c in commands:
        if isinstance(c, ScheduleActivity | StartChild):
            child_id = str(uuid.uuid4())
            o = c.options
            is_wf = isinstance(c, StartChild)
            timeout = o.timeout
            if timeout is None:
                timeout = settings.default_workflow_timeout if is_wf else settings.default_timeout
            retries = o.retries if o.retries is not None else settings.default_retries
            queue = o.queue or workflow_queue
            eager = (
                not is_wf
                and queue in eager_queues
                and eager_slots > 0
                and o.concurrency_key is None
                and o.rate_key is None
            )
            eager_slots -= 1 if eager else 0
            args = c.encoded_args or codec.current(settings).encode_call(
                c.args, c.kwargs, max_bytes=settings.max_payload_bytes
            )
            children.append(
                ChildRow(
                    id=child_id,
                    kind="workflow" if is_wf else "activity",
                    name=c.name,
                    queue=queue,
                    priority=o.priority or 0,
                    args=args,
                    max_retries=0 if is_wf else retries,
                    timeout=None if is_wf else float(timeout),
                    version=o.version if is_wf else None,
                    workflow_timeout=float(timeout) if is_wf else None,
                    seq=c.seq,
                    eager=eager,
                    concurrency_key=o.concurrency_key,
                    concurrency_limit=o.concurrency_limit,
                    rate_key=o.rate_key,
                )
            )
            steps.append(StepRow(c.seq, c.kind, c.name, "scheduled", execution_id=child_id))
        elif isinstance(c, StartTimer):
            steps.append(StepRow(c.seq, "timer", c.name, "scheduled", seconds=float(c.seconds)))
        elif isinstance(c, WaitSignal):
            secs = None if c.timeout is None else float(c.timeout)
            steps.append(StepRow(c.seq, "signal", c.name, "scheduled", seconds=secs))
            signals.append(c.name)
        elif isinstance(c, RecordVersion | RecordMarker):
            steps.append(
                StepRow(
                    c.seq,
                    "version",
                    c.name,
                    "completed",
                    # The library's own values (an int, a time as text): plain JSON, which
                    # every codec decodes as it is.
                    result=codec.encode(c.version if isinstance(c, RecordVersion) else c.value),
                    delivered_in=number,
                )
            )
    return Plan(steps, children, signals)


_new = object.__new__


def claimed_of(fields: dict[str, Any]) -> Claimed:
    """The :class:`Claimed` of ``fields``, which name every field of it.

    Made once or twice for every execution a worker runs: a frozen dataclass's ``__init__``
    sets each of its 17 fields through ``object.__setattr__``, three times the cost of this.
    """
    claimed: Claimed = _new(Claimed)
    claimed.__dict__.update(fields)
    return claimed


def eager_claims(
    workflow_id: str, children: Sequence[ChildRow], trace_context: str | None = None
) -> list[Claimed]:
    """The activities an activation starts already claimed by its worker."""
    return [
        claimed_of(
            {
                "id": ch.id,
                "kind": "activity",
                "name": ch.name,
                "queue": ch.queue,
                "args": ch.args,
                "attempts": 1,
                "max_retries": ch.max_retries,
                "timeout": ch.timeout,
                "lease": 1,
                "version": None,
                "wakeups": 0,
                "parent_id": workflow_id,
                "deadline": None,
                "pickup_latency": 0.0,
                "parent_seq": ch.seq,
                "resolutions": None,
                "trace_context": trace_context,
            }
        )
        for ch in children
        if ch.eager
    ]
