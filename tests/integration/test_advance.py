"""The batch write of workflow activations (``PostgresStore.advance``), driven step by step."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest

from tests.integration import workflows_app as app
from workflows import codec
from workflows.history import ScheduleActivity, StepCommand
from workflows.records import Advance, Claimed, eager_claims, plan
from workflows_postgres import store as store_module
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


async def count_activity_updates(store: PostgresStore) -> None:
    """Every UPDATE of an activity's row from now on, in activity_updates, and of a step's, in
    step_updates (triggers of the test's own)."""
    await store.pool.execute(
        """
        CREATE TABLE activity_updates (n serial, id uuid, status text);
        CREATE FUNCTION count_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO activity_updates (id, status) VALUES (NEW.id, NEW.status);
            RETURN NULL;
        END $$;
        CREATE TRIGGER count_update AFTER UPDATE ON workflows.executions
        FOR EACH ROW WHEN (NEW.kind = 'activity') EXECUTE FUNCTION count_update();
        CREATE TABLE step_updates (n serial, seq integer, status text);
        CREATE FUNCTION count_step_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO step_updates (seq, status) VALUES (NEW.seq, NEW.status);
            RETURN NULL;
        END $$;
        CREATE TRIGGER count_step_update AFTER UPDATE ON workflows.workflow_steps
        FOR EACH ROW EXECUTE FUNCTION count_step_update();
        """
    )


async def test_an_activity_a_chain_starts_and_ends_is_written_once_as_it_ended(
    store: PostgresStore,
) -> None:
    await count_activity_updates(store)
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    [a0] = first.eager
    one = item(store, wf, 1, schedule(1), activity=a0, result=1)
    [a1] = eager_claims(wf.id, one.plan.children)
    two = item(store, wf, 2, schedule(2), activity=a1, result=2)
    done = await store.advance(worker, [one, two])
    assert [d.outcome for d in done] == ["waiting", "waiting"]
    updates = await store.pool.fetch("SELECT id::text, status FROM activity_updates ORDER BY n")
    # Activity 0 was written running by the batch before: its end is an UPDATE. Activity 1,
    # started by item one and ended by item two of the same batch, is inserted as it ended.
    assert [tuple(u) for u in updates] == [(a0.id, "completed")]
    rows = {
        r["id"]: dict(r)
        for r in await store.pool.fetch(
            "SELECT id::text, status, worker_id, lease, attempts, result::text, error,"
            " started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished"
            " FROM workflows.executions WHERE id = ANY ($1::uuid[])",
            [a0.id, a1.id],
        )
    }
    # Apart from its result, the row is the one an UPDATE would have left.
    assert rows[a1.id]["result"] == "2" and rows[a0.id]["result"] == "1"
    for r in rows.values():
        del r["id"], r["result"]
    assert rows[a1.id] == rows[a0.id]
    assert rows[a0.id] == {
        "status": "completed",
        "worker_id": None,
        "lease": 1,
        "attempts": 1,
        "error": None,
        "started": True,
        "finished": True,
    }


async def test_a_first_activity_ended_in_the_batch_that_starts_it_is_written_once(
    store: PostgresStore,
) -> None:
    await count_activity_updates(store)
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    # The first activation and the outcome of the activity it starts, run ahead: one batch.
    zero = item(store, wf, 0, schedule(0))
    [a0] = eager_claims(wf.id, zero.plan.children)
    one = item(store, wf, 1, schedule(1), activity=a0, result=5)
    done = await store.advance(worker, [zero, one])
    assert [d.outcome for d in done] == ["waiting", "waiting"]
    assert await store.pool.fetch("SELECT id FROM activity_updates") == []
    status = await store.get_status(a0.id)
    assert (status["status"], status["result"], status["attempts"]) == ("completed", 5, 1)
    steps = await store.steps_of(wf.id)
    assert [(s["seq"], s["status"], s["result"]) for s in steps] == [
        (0, "completed", 5),
        (1, "scheduled", None),
    ]


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


async def chain(
    store: PostgresStore, wf: Claimed, first: Claimed, steps: int
) -> tuple[list[Advance], list[Claimed]]:
    """Items 1..steps of one workflow, each ending the activity the one before started."""
    items: list[Advance] = []
    acts = [first]
    for n in range(1, steps + 1):
        it = item(store, wf, n, schedule(n), activity=acts[-1], result=n * 10)
        items.append(it)
        [nxt] = eager_claims(wf.id, it.plan.children)
        acts.append(nxt)
    return items, acts


async def activity_rows(store: PostgresStore, wf: Claimed) -> dict[int, tuple[str, object]]:
    rows = await store.pool.fetch(
        "SELECT parent_seq, status, result::text AS result FROM workflows.executions"
        " WHERE parent_id = $1::uuid",
        wf.id,
    )
    return {r["parent_seq"]: (r["status"], r["result"]) for r in rows}


async def assert_chain_written(store: PostgresStore, wf: Claimed, ended: int) -> None:
    """Activities and steps 0 to ended - 1 of a chain (see chain()) ended with their results
    (10, 20, ...), and the next one started: its activity running, its step scheduled."""
    rows = {n: ("completed", str(10 * (n + 1))) for n in range(ended)}
    assert await activity_rows(store, wf) == {**rows, ended: ("running", None)}
    steps = await store.steps_of(wf.id)
    assert [(s["seq"], s["status"], s["result"]) for s in steps] == [
        *((n, "completed", 10 * (n + 1)) for n in range(ended)),
        (ended, "scheduled", None),
    ]


async def test_a_run_of_a_workflow_admits_its_activities_at_once_each_written_once(
    store: PostgresStore,
) -> None:
    await count_activity_updates(store)
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    items, acts = await chain(store, wf, first.eager[0], 5)
    done = await store.advance(worker, items)
    assert [d.outcome for d in done] == ["waiting"] * 5
    # Activity 0 was written by the batch before; 1 to 4 were started and ended in this one
    # (inserted as they ended); 5 was started by the last item and runs.
    updates = await store.pool.fetch("SELECT id::text FROM activity_updates")
    assert [u["id"] for u in updates] == [acts[0].id]
    await assert_chain_written(store, wf, 5)


async def test_a_run_that_breaks_off_keeps_no_activity_of_the_items_it_dropped(
    store: PostgresStore,
) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    items, _ = await chain(store, wf, first.eager[0], 4)
    # The copy that ran item three saw a signal the database does not know of: the run
    # breaks off there (its activation dropped, the workflow woken), and item four, built on
    # it, is stale. Activity 3, admitted with the run's, must not stay.
    stale_copy = dataclasses.replace(wf, wakeups=wf.wakeups + 1)
    items[2] = dataclasses.replace(items[2], workflow=stale_copy)
    done = await store.advance(worker, items)
    assert [d.outcome for d in done] == ["waiting", "waiting", "fallback", "stale"]
    assert await activity_rows(store, wf) == {
        0: ("completed", "10"),
        1: ("completed", "20"),
        2: ("completed", "30"),
    }
    steps = await store.steps_of(wf.id)
    assert [(s["seq"], s["status"]) for s in steps] == [
        (0, "completed"),
        (1, "completed"),
        (2, "completed"),
    ]
    row = await store.pool.fetchrow(
        "SELECT status FROM workflows.executions WHERE id = $1::uuid", wf.id
    )
    assert row["status"] == "pending"


async def test_a_run_on_a_paused_queue_admits_its_activities_one_by_one(
    store: PostgresStore,
) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    await store.pool.execute(
        "SELECT * FROM workflows.set_queue('orders', NULL, NULL, NULL, true, false, false, true)"
    )
    items, _ = await chain(store, wf, first.eager[0], 3)
    done = await store.advance(worker, items)
    # As for a chain of two: activity 1 is refused (pending), what was run ahead on it is not
    # kept, and nothing after it is written.
    assert [d.outcome for d in done] == ["waiting", "stale", "stale"]
    assert await activity_rows(store, wf) == {0: ("completed", "10"), 1: ("pending", None)}


async def test_a_run_admits_only_the_activities_its_items_carry_whatever_the_worker_says(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's list of a run's activities is a hint: one that differs from the items
    # (a result forged on the way) is not what gets written.
    real = store_module._mark_runs

    def forged(docs: list[dict[str, Any]]) -> None:
        real(docs)
        if "run_kids" in docs[0]:
            docs[0]["run_kids"][1]["result"] = '"forged"'
            forging.append(docs[0]["run_kids"][1]["id"])

    forging: list[str] = []

    monkeypatch.setattr(store_module, "_mark_runs", forged)
    await count_activity_updates(store)
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    items, acts = await chain(store, wf, first.eager[0], 4)
    done = await store.advance(worker, items)
    assert [d.outcome for d in done] == ["waiting"] * 4
    assert forging == [acts[2].id]
    await assert_chain_written(store, wf, 4)
    # From the forged one on, the item by item way: each still inserted once, as it ended.
    updates = await store.pool.fetch("SELECT id::text FROM activity_updates ORDER BY n")
    assert [u["id"] for u in updates] == [acts[0].id]


async def test_a_run_that_ends_the_workflow_records_the_last_step_as_delivered(
    store: PostgresStore,
) -> None:
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    [first] = await store.advance(worker, [item(store, wf, 0, schedule(0))])
    items, acts = await chain(store, wf, first.eager[0], 3)
    # Item four: activity 3's outcome, on which the code returns (the step it was given).
    last = dataclasses.replace(
        item(store, wf, 4, [], activity=acts[3], result=40),
        delivered=[3],
        outcome="completed",
        result=codec.encode("done"),
        plan=plan(store.settings, wf.queue, 4, [], QUEUES, 10),
    )
    done = await store.advance(worker, [*items, last])
    assert [d.outcome for d in done] == ["waiting", "waiting", "waiting", "completed"]
    status = await store.get_status(wf.id)
    assert (status["status"], status["result"]) == ("completed", "done")
    steps = await store.pool.fetch(
        "SELECT seq, status, result::text, delivered_in FROM workflows.workflow_steps"
        " WHERE workflow_id = $1::uuid ORDER BY seq",
        wf.id,
    )
    assert [tuple(s) for s in steps] == [
        (0, "completed", "10", 1),
        (1, "completed", "20", 2),
        (2, "completed", "30", 3),
        (3, "completed", "40", 4),
    ]


async def test_a_claimed_workflows_first_activation_starts_a_run_written_once(
    store: PostgresStore,
) -> None:
    await count_activity_updates(store)
    worker = str(uuid.uuid4())
    wf = await claimed_workflow(store, worker)
    # The claimed workflow's first activation, then three steps run ahead: one batch.
    zero = item(store, wf, 0, schedule(0))
    [a0] = eager_claims(wf.id, zero.plan.children)
    items, _ = await chain(store, wf, a0, 3)
    done = await store.advance(worker, [zero, *items])
    assert [d.outcome for d in done] == ["waiting"] * 4
    # Every activity and every step is written once, as it ended (activity 3 runs).
    assert await store.pool.fetch("SELECT id FROM activity_updates") == []
    assert await store.pool.fetch("SELECT seq FROM step_updates") == []
    await assert_chain_written(store, wf, 3)
    row = await store.pool.fetchrow(
        "SELECT status, sticky_worker_id::text AS sticky FROM workflows.executions"
        " WHERE id = $1::uuid",
        wf.id,
    )
    assert (row["status"], row["sticky"]) == ("waiting", worker)
