"""The batch write of workflow activations (``PostgresStore.advance``), driven step by step."""

from __future__ import annotations

import dataclasses
import json
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


async def test_a_chain_records_a_failed_activity_on_its_step(store: PostgresStore) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    [a0] = first.eager
    one = item(store, wf, 1, schedule(1), activity=a0, result=0)
    [a1] = eager_claims(wf.id, one.plan.children)
    error = codec.encode({"type": "ValueError", "message": "no"})
    two = dataclasses.replace(
        item(store, wf, 2, schedule(2), activity=a1),
        act_status="failed",
        act_result=None,
        act_error=error,
    )
    [a2] = eager_claims(wf.id, two.plan.children)
    three = item(store, wf, 3, schedule(3), activity=a2, result=2)
    done = await store.advance(worker, [one, two, three])
    assert [d.outcome for d in done] == ["waiting", "waiting", "waiting"]
    steps = {s["seq"]: s for s in await store.steps_of(wf.id)}
    assert [(seq, s["status"]) for seq, s in sorted(steps.items())] == [
        (0, "completed"),
        (1, "failed"),
        (2, "completed"),
        (3, "scheduled"),
    ]
    assert steps[1]["error"] == {"type": "ValueError", "message": "no"}
    assert steps[2]["result"] == 2
    assert (await store.get_status(a1.id))["status"] == "failed"


async def test_a_child_a_paused_queue_refuses_mid_chain_waits_and_its_outcome_is_stale(
    store: PostgresStore,
) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    [a0] = first.eager
    # Paused since the worker started activity 1 ahead of this write: its row is written
    # pending (it runs once the queue resumes), and the outcome run ahead for it is not kept.
    await store.pool.execute(
        "SELECT * FROM workflows.set_queue('orders', NULL, NULL, NULL, true, false, false, true)"
    )
    one = item(store, wf, 1, schedule(1), activity=a0, result=0)
    [a1] = eager_claims(wf.id, one.plan.children)
    two = item(store, wf, 2, schedule(2), activity=a1, result=1)
    done = await store.advance(worker, [one, two])
    assert [d.outcome for d in done] == ["waiting", "stale"]
    steps = await store.steps_of(wf.id)
    assert [(s["seq"], s["status"]) for s in steps] == [(0, "completed"), (1, "scheduled")]
    status = await store.get_status(a1.id)
    assert status["status"] == "pending" and status["attempts"] == 0


async def test_a_chain_writes_the_trace_context_on_the_activities_it_starts(
    store: PostgresStore,
) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    [a0] = first.eager
    carrier = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'

    def traced(it: Advance) -> Advance:
        return dataclasses.replace(it, plan=dataclasses.replace(it.plan, trace_context=carrier))

    one = traced(item(store, wf, 1, schedule(1), activity=a0, result=0))
    [a1] = eager_claims(wf.id, one.plan.children)
    two = traced(item(store, wf, 2, schedule(2), activity=a1, result=1))
    done = await store.advance(worker, [one, two])
    assert [d.outcome for d in done] == ["waiting", "waiting"]
    rows = await store.pool.fetch(
        "SELECT parent_seq, status, trace_context::text AS tc FROM workflows.executions"
        " WHERE parent_id = $1::uuid AND parent_seq > 0 ORDER BY parent_seq",
        wf.id,
    )
    assert [(r["parent_seq"], r["status"]) for r in rows] == [(1, "completed"), (2, "running")]
    assert all(json.loads(r["tc"]) == json.loads(carrier) for r in rows)
