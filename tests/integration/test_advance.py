"""The batch write of workflow activations (``PostgresStore.advance``), driven step by step."""

from __future__ import annotations

import uuid

from tests.integration import workflows_app as app
from workflows import codec
from workflows.history import ScheduleActivity, StepCommand
from workflows.records import Advance, Claimed, eager_claims, plan
from workflows_postgres.store import PostgresStore

QUEUES = frozenset({"orders"})
ACTIVITY = "tests.integration.workflows_app:double"


async def claimed_workflow(store: PostgresStore, worker: str) -> Claimed:
    await app.fan_out.queue(1)
    [wf] = await store.claim(worker, ["orders"], 1)
    assert wf.kind == "workflow"
    return wf


def item(
    store: PostgresStore,
    wf: Claimed,
    number: int,
    commands: list[StepCommand],
    activity: Claimed | None = None,
    result: object = None,
) -> Advance:
    return Advance(
        workflow=wf,
        number=number,
        delivered=[],
        outcome="blocked",
        result=None,
        error=None,
        plan=plan(store.settings, wf.queue, number, commands, QUEUES, 10),
        activity=activity,
        act_status=None if activity is None else "completed",
        act_result=None if activity is None else codec.encode(result),
    )


def schedule(seq: int) -> list[StepCommand]:
    return [ScheduleActivity(seq, ACTIVITY, (seq,), {})]


async def test_a_chain_of_one_workflow_in_one_batch_is_written_in_order(
    store: PostgresStore,
) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    assert first.outcome == "waiting"
    [a0] = first.eager
    # Activity 0's outcome with the activation it led to (which starts activity 1 here),
    # then activity 1's outcome, run ahead, in the same batch: the second needs the first's
    # rows, written before it.
    one = item(store, wf, 1, schedule(1), activity=a0, result={"b": 1, "a": 0})
    [a1] = eager_claims(wf.id, one.plan.children)
    two = item(store, wf, 2, schedule(2), activity=a1, result=2)
    done = await store.advance(worker, [one, two])
    assert [d.outcome for d in done] == ["waiting", "waiting"]
    steps = await store.steps_of(wf.id)
    assert [(s["seq"], s["status"]) for s in steps] == [
        (0, "completed"),
        (1, "completed"),
        (2, "scheduled"),
    ]
    # Kept as written: the key order a jsonb column would have sorted.
    assert list(steps[0]["result"]) == ["b", "a"]
    status = await store.get_status(a1.id)
    assert status["status"] == "completed" and status["result"] == 2


async def test_an_outcome_for_a_workflow_that_moved_on_falls_back(store: PostgresStore) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    [a0] = first.eager
    # A signal woke the workflow meanwhile: the copy that ran activation 1 is out of date.
    await store.pool.execute(
        "UPDATE workflows.executions SET wakeups = wakeups + 1 WHERE id = $1::uuid", wf.id
    )
    [done] = await store.advance(worker, [item(store, wf, 1, schedule(1), a0, 5)])
    assert done.outcome == "fallback" and not done.eager
    steps = await store.steps_of(wf.id)
    # The outcome is recorded as any other, the activation dropped: no step 1.
    assert [(s["seq"], s["status"]) for s in steps] == [(0, "completed")]
    row = await store.pool.fetchrow(
        "SELECT status, wakeups FROM workflows.executions WHERE id = $1::uuid", wf.id
    )
    assert row["status"] == "pending" and row["wakeups"] == wf.wakeups + 2
    # Sent again (a reply lost after the commit), the same item changes nothing.
    [again] = await store.advance(worker, [item(store, wf, 1, schedule(1), a0, 5)])
    assert again.outcome == "stale"
