"""The states an execution and a workflow step can be in, and what they are.

Each value is the text the database stores (its CHECK constraints list the same words; a unit
test keeps the two equal). Members are ``str``s, so rows read back as plain strings compare
equal to them and these types can be used where a string was before.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where an execution is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    # A workflow suspended on a step, a signal or a timer: it holds no worker.
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Kind(StrEnum):
    """What an execution is."""

    JOB = "job"
    WORKFLOW = "workflow"
    # An execution a workflow started: runs like a job, reports back to its workflow.
    ACTIVITY = "activity"


class StepStatus(StrEnum):
    """Where a step of a workflow's history is."""

    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepKind(StrEnum):
    """What a step of a workflow's history waits for or records."""

    ACTIVITY = "activity"
    CHILD = "child"
    TIMER = "timer"
    SIGNAL = "signal"
    VERSION = "version"


# Only an operator's retry (workflows.retry, `workflows retry`) leaves a final status: failed or
# cancelled back to pending, as a new attempt. Nothing a worker or the fleet does reopens one.
FINAL_STATUSES: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE_STATUSES: frozenset[Status] = frozenset({Status.PENDING, Status.RUNNING, Status.WAITING})
