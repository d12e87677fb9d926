"""Store operations written once, driven by an async (asyncpg) or a sync (psycopg) runner.

Each operation is a generator: it yields the statements it needs and receives their rows,
so the logic of enqueueing, signalling and cancelling exists in one place for both drivers.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from workflows import codec
from workflows.errors import (
    ExecutionNotFoundError,
    SignalError,
    WorkflowNotFoundError,
    WorkflowsError,
    preview,
)
from workflows.executions import execution_dict as status_dict
from workflows.states import FINAL_STATUSES
from workflows.store import EnqueueRequest
from workflows_postgres import pq_call

__all__ = ["FINAL_STATUSES", "Call", "Op"]

T = TypeVar("T")
Row = Mapping[str, Any]


@dataclass(frozen=True)
class Call:
    sql: str  # the name of a statement in sql/*.sql
    args: tuple[Any, ...] = ()


Op = Generator[Call, Sequence[Row], T]


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def control(statement: str, args: Sequence[Any]) -> Op[list[dict[str, Any]]]:
    """One named statement of settings (queues, limits, schedules): its rows as dicts."""
    rows = yield Call(statement, tuple(args))
    return [dict(r) for r in rows]


# Where the arguments' JSON goes among the enqueue statement's parameters.
_ARGS = 4


def _enqueue_args(r: EnqueueRequest, payload: str, handoff: bool) -> tuple[Any, ...]:
    """The parameters of the ``enqueue`` statement."""
    return (
        r.kind,
        r.name,
        r.queue,
        r.priority,
        payload,
        r.max_retries,
        _float(r.timeout),
        r.run_at,
        _float(r.delay),
        r.idempotency_key,
        r.version,
        _float(r.workflow_timeout),
        handoff,
        r.concurrency_key,
        r.concurrency_limit,
        r.rate_key,
        _float(r.idempotency_ttl),
        r.trace_context,
    )


# plain_args(): the statement's name, its parameters before and after the arguments' JSON,
# and the same two as UTF-8 text parameters (pq_call; None when one has no text form).
Plain = tuple[
    str,
    tuple[Any, ...],
    tuple[Any, ...],
    tuple[tuple[bytes | None, ...], tuple[bytes | None, ...]] | None,
]


def plain_args(options: EnqueueRequest) -> Plain:
    """The statement for ``enqueue_one()`` of ``options`` (no idempotency key: its one row
    always comes back), and its parameters before and after the arguments' JSON, as values
    and as text.

    ``enqueue_now`` when the run starts now with no key or limit, else ``enqueue``. Made once
    and kept on ``options``: a function's plain calls reuse one request, and building the 18
    parameters again was a tenth of the client's work per call.
    """
    made: Plain | None = options.prepared
    if made is None:
        r = options
        if (
            r.kind in ("job", "workflow")
            and r.run_at is None
            and (r.delay is None or r.delay <= 0)
            and r.idempotency_key is None
            and r.concurrency_key is None
            and r.rate_key is None
        ):
            name = "enqueue_now"
            head: tuple[Any, ...] = (r.kind, r.name, r.queue, r.priority)
            tail: tuple[Any, ...] = (
                r.max_retries,
                _float(r.timeout),
                r.version,
                _float(r.workflow_timeout),
                r.trace_context,
            )
        else:
            args = _enqueue_args(options, "", True)
            name, head, tail = "enqueue", args[:_ARGS], args[_ARGS + 1 :]
        head_text, tail_text = pq_call.text_params(head), pq_call.text_params(tail)
        text = None if head_text is None or tail_text is None else (head_text, tail_text)
        made = (name, head, tail, text)
        options.prepared = made
    return made


def enqueue(request: EnqueueRequest, handoff: bool = True) -> Op[str]:
    """Insert one run; ``handoff``: it may go straight to an idle worker (see enqueue() in
    migration 0006).

    Not in a caller's transaction: it would hold the worker's offer until it ends.
    """
    r = request
    args = _enqueue_args(r, r.args, handoff)
    # ON CONFLICT waits for a concurrent insert of the same key to commit or roll back, so
    # the follow-up read finds the winner; a rolled-back winner lets the insert through. A key
    # past its window (idempotency_ttl) is taken off its old row by a try that finds it, and
    # the read then finds no row: the next try inserts (see enqueue() in 0009).
    for _ in range(3):
        rows = yield Call("enqueue", args)
        if rows:
            return str(rows[0]["id"])
        rows = yield Call("find_by_idempotency_key", (r.idempotency_key,))
        if rows:
            return str(rows[0]["id"])
    raise WorkflowsError(f"could not enqueue with idempotency key {r.idempotency_key!r}")


def enqueue_many(options: EnqueueRequest, payloads: Sequence[str]) -> Op[list[str]]:
    if not payloads:
        return []
    r = options
    each = r.keys_each
    ckeys = [k for k, _ in each] if each else [r.concurrency_key] * len(payloads)
    rkeys = [k for _, k in each] if each else [r.rate_key] * len(payloads)
    keyed = any(k is not None for k in ckeys)
    rows = yield Call(
        "enqueue_many_keyed" if keyed else "enqueue_many",
        (
            r.kind,
            r.name,
            r.queue,
            r.priority,
            list(payloads),
            r.max_retries,
            _float(r.timeout),
            r.run_at,
            _float(r.delay),
            r.version,
            _float(r.workflow_timeout),
            ckeys,
            r.concurrency_limit if keyed else None,
            rkeys,
            r.trace_context,
        ),
    )
    return [str(row["id"]) for row in rows]


def _check_id(execution_id: str, what: str = "execution") -> str:
    """``execution_id`` as a canonical UUID; not found (``what``: an execution or a workflow)
    if it is not one, since no execution could have it."""
    import uuid

    try:
        return str(uuid.UUID(str(execution_id)))
    except ValueError:
        missing = WorkflowNotFoundError if what == "workflow" else ExecutionNotFoundError
        raise missing(f"no {what} {preview(execution_id)} (ids are UUIDs)") from None


def get_status(execution_id: str) -> Op[dict[str, Any]]:
    rows = yield Call("status", (_check_id(execution_id),))
    if not rows:
        raise ExecutionNotFoundError(f"no execution {execution_id}")
    return status_dict(rows[0])


def statuses_among(ids: list[str]) -> Op[dict[str, str]]:
    """The status of each of ``ids`` (canonical UUIDs) that exists."""
    rows = yield Call("statuses_among", (ids,))
    return {row["id"]: row["status"] for row in rows}


def steps_of(workflow_id: str) -> Op[list[dict[str, Any]]]:
    rows = yield Call("steps_of", (_check_id(workflow_id),))
    return [
        {
            "seq": row["seq"],
            "kind": row["kind"],
            "name": row["name"],
            "status": row["status"],
            "execution_id": row["execution_id"],
            "result": codec.current().view(codec.decode(row["result"])),
            "error": codec.decode(row["error"]),
        }
        for row in rows
    ]


def wake_workflow(workflow_id: str) -> Op[None]:
    yield Call("wake_workflow", (workflow_id,))


def send_signal(workflow_id: str, name: str, payload: str) -> Op[None]:
    """Store a signal and wake the workflow if it waits for it.

    Raises ``WorkflowNotFoundError`` for every id no workflow has: malformed, unknown, or a
    job's or an activity's; ``SignalError`` for a finished workflow.
    """
    workflow_id = _check_id(workflow_id, "workflow")
    rows = yield Call("lock_execution", (workflow_id,))
    if not rows:
        raise WorkflowNotFoundError(f"no workflow {workflow_id} to signal")
    target = rows[0]
    if target["kind"] != "workflow":
        article = "an" if target["kind"] == "activity" else "a"
        raise WorkflowNotFoundError(
            f"no workflow {workflow_id} to signal: it is {article} {target['kind']} "
            "(only workflows take signals)"
        )
    if target["status"] in FINAL_STATUSES:
        raise SignalError(f"workflow {workflow_id} is already {target['status']}")
    yield Call("insert_signal", (workflow_id, name, payload))
    rows = yield Call("deliver_signal", (workflow_id, name))
    if rows and rows[0]["delivered"]:
        yield from wake_workflow(workflow_id)


def finish_tree(execution_id: str, status: str, error: dict[str, Any]) -> Op[None]:
    """End an execution and everything under it; resolve its parent's step if it has one.

    The caller holds the execution's row lock.
    """
    rows = yield Call("lock_execution", (execution_id,))
    if not rows:
        return
    target = rows[0]
    yield Call("cancel_tree", (execution_id, status, codec.encode(error)))
    if target["parent_id"] is not None and not (
        target["status"] == "running" and target["kind"] != "workflow"
    ):
        step_status = "cancelled" if status == "cancelled" else "failed"
        # Resolves the parent's step and wakes the parent (resolve_step() in 0006).
        yield Call(
            "resolve_parent_step",
            (target["parent_id"], target["parent_seq"], step_status, None, codec.encode(error)),
        )


def cancel(execution_id: str) -> Op[str]:
    """``cancelled`` (done now), ``cancelling`` (a worker is told to stop it), or
    ``already <status>`` when it had finished."""
    execution_id = _check_id(execution_id)
    rows = yield Call("lock_execution", (execution_id,))
    if not rows:
        raise ExecutionNotFoundError(f"no execution {execution_id}")
    current = rows[0]["status"]
    if current in FINAL_STATUSES:
        return f"already {current}"
    error = {"type": "ExecutionCancelledError", "message": "cancelled on request"}
    yield from finish_tree(execution_id, "cancelled", error)
    if current == "running" and rows[0]["kind"] != "workflow":
        return "cancelling"
    return "cancelled"


def close_children(workflow_id: str) -> Op[None]:
    """Cancel what a finished workflow started and never waited for (not the workflow itself)."""
    rows = yield Call("open_children", (workflow_id,))
    error = {"type": "ExecutionCancelledError", "message": "parent workflow ended"}
    for row in rows:
        yield from finish_tree(row["id"], "cancelled", error)
    yield Call("close_open_steps", (workflow_id,))
