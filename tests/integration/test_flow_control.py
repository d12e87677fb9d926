"""Flow control at the admission point: queue limits, pauses, concurrency keys and rates, as
the database enforces them for every route into `running` (claims straight through the store,
so each assertion is about what admit() lets through, not about a worker's timing)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import workflows
from tests.integration import jobs_app
from tests.integration import workflows_app as app
from workflows import queues, rate_limits
from workflows.errors import ConfigurationError
from workflows.records import Outcome, Registration
from workflows_cli.main import cli
from workflows_postgres.store import PostgresStore


async def _worker(store: PostgresStore, *queue_names: str) -> str:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, queue_names, "test"))
    return worker_id


async def _enqueue(n: int, queue: str, **options: Any) -> list[str]:
    return [
        await jobs_app.record.options(queue=queue, **options).queue(f"call {i}") for i in range(n)
    ]


async def _finish(store: PostgresStore, claimed: list[Any]) -> None:
    recorded = await store.record_outcomes(
        [Outcome(c.id, c.lease, "completed", result="null") for c in claimed]
    )
    assert recorded == {c.id for c in claimed}


def _count(database_url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return row[0]


async def test_queue_concurrency_caps_every_claim_across_workers(store: PostgresStore) -> None:
    await queues.set_limit("capped", concurrency=2)
    await _enqueue(6, "capped")
    one, two = await _worker(store, "capped"), await _worker(store, "capped")

    first = await store.claim(one, ["capped"], 10)
    assert len(first) == 2
    assert await store.claim(two, ["capped"], 10) == []
    info = await queues.get("capped")
    assert (info["concurrency"], info["running"], info["pending"]) == (2, 2, 4)

    await _finish(store, first[:1])
    assert len(await store.claim(two, ["capped"], 10)) == 1
    # Raised: the room is there at once.
    await queues.set_limit("capped", concurrency=5)
    assert len(await store.claim(one, ["capped"], 10)) == 3
    # Removed: unlimited again.
    await queues.set_limit("capped", concurrency=None)
    assert (await queues.get("capped"))["concurrency"] is None


async def test_pause_stops_every_start_until_resumed(store: PostgresStore) -> None:
    ids = await _enqueue(3, "pausable")
    worker = await _worker(store, "pausable")
    await queues.pause("pausable")
    assert await store.claim(worker, ["pausable"], 10) == []
    status = await workflows.get_status(ids[0])
    assert status["waiting_for"] == "queue pausable is paused"
    assert (await queues.get("pausable"))["paused"] is True

    await queues.resume("pausable")
    assert len(await store.claim(worker, ["pausable"], 10)) == 3


async def test_a_handoff_goes_through_the_queue_limit(
    store: PostgresStore, database_url: str
) -> None:
    worker = await _worker(store, "handoffs")
    await queues.set_limit("handoffs", concurrency=1)
    # An idle worker's offer, its listening session alive (it holds the offer's lock): a job
    # goes straight to it, already running, while the queue has room...
    with psycopg.connect(database_url, autocommit=True) as session:
        session.execute(b"SELECT pg_advisory_lock(123)")
        await store.offer(worker, ["handoffs"], 123, 30)
        first = await jobs_app.record.options(queue="handoffs").queue("x")
        assert (await workflows.get_status(first))["status"] == "running"
        # ... and not once it has none: enqueued as any other, waiting for room.
        await store.offer(worker, ["handoffs"], 123, 30)
        second = await jobs_app.record.options(queue="handoffs").queue("y")
        status = await workflows.get_status(second)
        assert status["status"] == "pending"
        assert status["waiting_for"] == "queue handoffs is at its concurrency limit (1)"


async def test_a_key_runs_one_at_a_time_in_order_without_blocking_others(
    store: PostgresStore, database_url: str
) -> None:
    worker = await _worker(store, "keyed")
    keyed = await _enqueue(3, "keyed", concurrency_key="customer:1")
    other = await _enqueue(1, "keyed", concurrency_key="customer:2")
    plain = await _enqueue(1, "keyed")
    held = _count(
        database_url,
        "SELECT array_agg(id::text ORDER BY run_at) FROM workflows.executions WHERE held",
    )
    assert held == keyed[1:]
    assert (await workflows.get_status(keyed[1]))["waiting_for"] == (
        "concurrency key customer:1: its 1 slot(s) are taken"
    )

    claimed = await store.claim(worker, ["keyed"], 10)
    assert {c.id for c in claimed} == {keyed[0], other[0], plain[0]}
    assert await store.claim(worker, ["keyed"], 10) == []
    # Each end hands the key's slot to the next, oldest first.
    for nxt in keyed[1:]:
        await _finish(store, [c for c in claimed if c.id in keyed])
        claimed = await store.claim(worker, ["keyed"], 10)
        assert [c.id for c in claimed] == [nxt]
    await _finish(store, claimed)
    assert (
        _count(
            database_url,
            "SELECT active FROM workflows.concurrency_keys WHERE key = 'customer:1'",
        )
        == 0
    )


async def test_a_key_limit_above_one_and_a_retry_keeps_its_slot(store: PostgresStore) -> None:
    worker = await _worker(store, "keyed2")
    ids = await _enqueue(4, "keyed2", concurrency_key="k", concurrency_limit=2)
    claimed = await store.claim(worker, ["keyed2"], 10)
    assert [c.id for c in claimed] == ids[:2]
    # A retry goes back to pending but stays within its key: nothing else of the key starts.
    retry = claimed[0]
    assert await store.record_outcomes(
        [Outcome(retry.id, retry.lease, "pending", error='{"message": "again"}')]
    ) == {retry.id}
    again = await store.claim(worker, ["keyed2"], 10)
    assert [c.id for c in again] == [retry.id]


async def test_a_cancelled_or_deleted_keyed_execution_frees_its_slot(
    store: PostgresStore, database_url: str
) -> None:
    worker = await _worker(store, "keyed3")
    first, second, third = await _enqueue(3, "keyed3", concurrency_key="c")
    assert await workflows.cancel(first) == "cancelled"
    assert [c.id for c in await store.claim(worker, ["keyed3"], 10)] == [second]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(b"DELETE FROM workflows.executions WHERE id = %s", (second,))
    assert [c.id for c in await store.claim(worker, ["keyed3"], 10)] == [third]


async def test_an_ended_keyed_execution_made_runnable_again_waits_for_its_key(
    store: PostgresStore, database_url: str
) -> None:
    # What a requeue of a failed execution does: it takes a slot again, or waits held.
    worker = await _worker(store, "keyed4")
    first, second = await _enqueue(2, "keyed4", concurrency_key="r")
    (claimed,) = await store.claim(worker, ["keyed4"], 10)
    await _finish(store, [claimed])
    (running,) = await store.claim(worker, ["keyed4"], 10)
    assert running.id == second
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(b"UPDATE workflows.executions SET status = 'pending' WHERE id = %s", (first,))
        held = conn.execute(
            b"SELECT held FROM workflows.executions WHERE id = %s", (first,)
        ).fetchone()
    assert held == (True,)
    assert await store.claim(worker, ["keyed4"], 10) == []


async def test_queue_rate_admits_no_more_than_its_window(store: PostgresStore) -> None:
    await queues.set_limit("rated", rate="3/s")
    ids = await _enqueue(5, "rated")
    worker = await _worker(store, "rated")
    first = await store.claim(worker, ["rated"], 10)
    assert len(first) == 3
    assert await store.claim(worker, ["rated"], 10) == []
    assert (await workflows.get_status(ids[4]))["waiting_for"].startswith(
        "queue rated is at its rate limit"
    )
    # The rest start once the first starts leave the window, not before.
    later: list[Any] = []
    for _ in range(400):
        later += await store.claim(worker, ["rated"], 10)
        if len(later) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(later) == 2
    started = [(await workflows.get_status(c.id))["started_at"] for c in first + later]
    from datetime import datetime

    times = sorted(datetime.fromisoformat(s) for s in started)
    assert (times[3] - times[0]).total_seconds() >= 1.0
    assert (times[4] - times[1]).total_seconds() >= 1.0


async def test_a_rate_key_is_shared_across_queues(store: PostgresStore) -> None:
    await rate_limits.set("api:shared", "2/m")
    await _enqueue(2, "rk1", rate_key="api:shared")
    await _enqueue(2, "rk2", rate_key="api:shared")
    free = await _enqueue(1, "rk2")
    worker = await _worker(store, "rk1", "rk2")
    claimed = await store.claim(worker, ["rk1", "rk2"], 10)
    keyed = [c for c in claimed if c.id not in free]
    assert len(keyed) == 2
    assert {c.id for c in claimed} >= set(free)
    assert await store.claim(worker, ["rk1", "rk2"], 10) == []
    assert [r["key"] for r in await rate_limits.list()] == ["api:shared"]
    # Deleted: unlimited.
    assert await rate_limits.delete("api:shared") is True
    assert len(await store.claim(worker, ["rk1", "rk2"], 10)) == 2
    assert await rate_limits.delete("api:shared") is False


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: queues.set_limit_sync("q", concurrency=-1), "concurrency must be 1 to"),
        (lambda: queues.set_limit_sync("q", concurrency=0), "concurrency must be 1 to"),
        (lambda: queues.set_limit_sync("q", concurrency=True), "must be an integer"),
        (lambda: queues.set_limit_sync("q", rate="ten per second"), "rate must look like"),
        (lambda: queues.set_limit_sync("q", rate="0/s"), "1 to 1,000,000 starts"),
        (lambda: queues.set_limit_sync("bad queue!", concurrency=1), "queue"),
        (lambda: queues.set_limit_sync("q"), "give concurrency=, rate= or both"),
        (lambda: rate_limits.set_sync("k", "5/fortnight"), "rate must look like"),
        (lambda: rate_limits.set_sync("", "5/s"), "non-empty"),
        (lambda: jobs_app.record.options(concurrency_key=""), "non-empty"),
        (lambda: jobs_app.record.options(concurrency_limit=-2), "concurrency_limit"),
        (lambda: jobs_app.record.options(rate_key=7), "rate_key must be a string"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_stored(
    database_url: str, call: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call()
    assert _count(database_url, "SELECT count(*) FROM workflows.queues") == 0
    assert _count(database_url, "SELECT count(*) FROM workflows.rate_limits") == 0


def test_bad_decorator_settings_fail_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match="concurrency_limit must be 1 to"):
        workflows.job(concurrency_key="k", concurrency_limit=-1)(lambda: None)
    with pytest.raises(ConfigurationError, match="concurrency_key must be a string"):
        workflows.job(concurrency_key=42)(lambda: None)


@workflows.job(queue="computed", concurrency_key=lambda n: n)
def computed(n: Any) -> None: ...


async def test_a_computed_key_must_be_text() -> None:
    with pytest.raises(
        ConfigurationError, match=r"concurrency_key \(as computed\) must be a string"
    ):
        await computed.queue(5)


def test_cli_sets_shows_and_refuses(database_url: str) -> None:
    runner = CliRunner()
    out = runner.invoke(
        cli, ["queues", "set-limit", "cliq", "--concurrency", "3", "--rate", "100/m"]
    )
    assert out.exit_code == 0, out.output
    assert "concurrency 3, rate 100/m" in out.output
    shown = runner.invoke(cli, ["queues", "show", "cliq", "--json"])
    assert '"concurrency": 3' in shown.output and '"rate": "100/m"' in shown.output
    assert runner.invoke(cli, ["queues", "pause", "cliq"]).exit_code == 0
    listed = runner.invoke(cli, ["queues", "list"]).output.splitlines()
    assert listed[1].split()[:4] == ["cliq", "3", "100/m", "yes"]
    for bad in (["--concurrency", "-5"], ["--rate", "5 per day"], ["--concurrency", "many"], []):
        refused = runner.invoke(cli, ["queues", "set-limit", "cliq2", *bad])
        assert refused.exit_code == 2, (bad, refused.output)
    assert runner.invoke(cli, ["rate-limits", "set", "api:x", "nope"]).exit_code == 2
    assert runner.invoke(cli, ["rate-limits", "set", "api:x", "10/s"]).exit_code == 0
    assert "api:x" in runner.invoke(cli, ["rate-limits", "list"]).output
    assert _count(database_url, "SELECT count(*) FROM workflows.queues") == 1
    assert (
        runner.invoke(cli, ["queues", "set-limit", "cliq", "--concurrency", "none"]).exit_code == 0
    )
    assert _count(database_url, "SELECT concurrency FROM workflows.queues") is None


async def test_a_waiting_workflow_holds_no_slot_of_its_queue(start_worker: Any) -> None:
    # Limit 1 on the workflows' queue: were a workflow waiting for its signal to keep the slot,
    # the second would never start.
    await queues.set_limit("orders", concurrency=1)
    await start_worker("orders")
    first = await app.approval.queue("one")
    second = await app.approval.queue("two")
    for wf in (first, second):
        for _ in range(500):
            if (await workflows.get_status(wf))["status"] == "waiting":
                break
            await asyncio.sleep(0.01)
        assert (await workflows.get_status(wf))["status"] == "waiting"
    for wf in (first, second):
        await workflows.send_signal(wf, "approved", {"approved": True})
    for wf in (first, second):
        assert (await workflows.get_result(wf, timeout=30))["status"] == "approved"


async def test_keyed_workflow_holds_its_key_while_waiting(start_worker: Any) -> None:
    await start_worker("orders")
    first = await app.approval.options(concurrency_key="order:7").queue("one")
    second = await app.approval.options(concurrency_key="order:7").queue("two")
    for _ in range(500):
        if (await workflows.get_status(first))["status"] == "waiting":
            break
        await asyncio.sleep(0.01)
    status = await workflows.get_status(second)
    assert status["status"] == "pending"
    assert status["waiting_for"].startswith("concurrency key order:7")
    await workflows.send_signal(first, "approved", {"approved": True})
    assert (await workflows.get_result(first, timeout=30))["status"] == "approved"
    for _ in range(500):
        if (await workflows.get_status(second))["status"] == "waiting":
            break
        await asyncio.sleep(0.01)
    await workflows.send_signal(second, "approved", {"approved": True})
    assert (await workflows.get_result(second, timeout=30))["status"] == "approved"


async def test_a_worker_looks_again_when_a_spent_rate_has_room(
    start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A poll far away: only the worker's own timer (when the window frees) can start the
    # second half in time. Without it they would wait for the poll, 60 s on.
    monkeypatch.setenv("WORKFLOWS_WORKER_POLL_INTERVAL", "60")
    await queues.set_limit("rate-wake", rate="4/s")
    await start_worker("rate-wake")
    ids = await _enqueue(8, "rate-wake")
    results = await asyncio.wait_for(
        asyncio.gather(*(workflows.get_result(i, timeout=30) for i in ids)), 10
    )
    assert sorted(results) == sorted(f"call {i}" for i in range(8))
    from datetime import datetime

    statuses = [await workflows.get_status(i) for i in ids]
    started = sorted(datetime.fromisoformat(s["started_at"]) for s in statuses)
    assert (started[4] - started[0]).total_seconds() >= 1.0


async def test_a_rate_set_while_a_worker_runs_is_waited_out_without_the_poll(
    start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker reads the flow settings every heartbeat interval: its claims that the new
    # rate cut short came before it knew of any rate. Once it knows, it must ask when the
    # window has room rather than wait for the poll, 60 s on.
    monkeypatch.setenv("WORKFLOWS_WORKER_POLL_INTERVAL", "60")
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.5")
    await start_worker("rate-late")
    await queues.set_limit("rate-late", rate="4/s")
    ids = await _enqueue(8, "rate-late")
    results = await asyncio.wait_for(
        asyncio.gather(*(workflows.get_result(i, timeout=30) for i in ids)), 10
    )
    assert sorted(results) == sorted(f"call {i}" for i in range(8))


async def test_a_limit_the_fleet_cannot_reach_is_admitted_side_by_side_and_one_it_can_counted(
    store: PostgresStore, database_url: str
) -> None:
    # Two workers that report holding at most 4 running each (what a worker of concurrency 2
    # serving a limited queue keeps to): under a limit of 20 their claims skip the count (the
    # queue's lock in shared mode); under a limit of 5 (below 8) they count, and never pass it.
    async def worker() -> str:
        worker_id = await _worker(store, "roomy")
        await store.control("report_running_bound", (worker_id, 4))
        return worker_id

    one, two = await worker(), await worker()
    await _enqueue(12, "roomy")
    await queues.set_limit("roomy", concurrency=20)
    first = await store.claim(one, ["roomy"], 2) + await store.claim(two, ["roomy"], 2)
    assert len(first) == 4
    await queues.set_limit("roomy", concurrency=5)
    # Counted: 4 run, 1 more at most.
    assert len(await store.claim(one, ["roomy"], 2)) == 1
    assert await store.claim(two, ["roomy"], 2) == []
    assert (
        _count(
            database_url,
            "SELECT count(*) FROM workflows.executions"
            " WHERE queue = 'roomy' AND status = 'running'",
        )
        == 5
    )


async def test_a_worker_serving_a_limited_queue_keeps_to_the_bound_it_reports(
    start_worker: Any, database_url: str
) -> None:
    # Unlimited: no bound (writes in flight may take more slots: workflows go faster); limited:
    # twice its concurrency, held to and reported.
    worker = await start_worker("bounded", concurrency=3)
    bound = "SELECT running_bound FROM workflows.worker_heartbeats WHERE worker_id = %s::uuid"
    assert _count(database_url, bound, worker.id) is None
    assert worker._slots.bound is None
    await queues.set_limit("bounded", concurrency=100)
    await worker._parts.flow.refresh()  # what maintenance does every heartbeat interval
    assert worker._slots.bound == 6
    assert _count(database_url, bound, worker.id) == 6
    await queues.set_limit("bounded", concurrency=None)
    await worker._parts.flow.refresh()
    assert _count(database_url, bound, worker.id) is None
    assert worker._slots.bound is None


@workflows.job(queue="many", concurrency_key=lambda customer, n: f"customer:{customer}")
async def per_customer(customer: str, n: int) -> int:
    return n


async def test_queue_many_with_keys_from_each_call(store: PostgresStore, database_url: str) -> None:
    calls = [((c, n), {}) for n in range(3) for c in ("b", "a")]
    ids = await per_customer.queue_many(calls)
    rows = {
        r[0]: r[1:]
        for r in psycopg.connect(database_url)
        .execute(
            b"SELECT id::text, concurrency_key, held, args->'args' FROM workflows.executions"
            b" WHERE queue = 'many'"
        )
        .fetchall()
    }
    # Ids in call order, each with its own call's key; the first of each key took its slot.
    assert [rows[i][2] for i in ids] == [list(args) for args, _ in calls]
    assert [rows[i][0] for i in ids] == [f"customer:{c}" for (c, _), _ in calls]
    assert [rows[i][1] for i in ids] == [False, False, True, True, True, True]
    # Each key's runs start in call order.
    worker = await _worker(store, "many")
    order = []
    for _ in range(3):
        claimed = await store.claim(worker, ["many"], 10)
        order += [c.id for c in claimed]
        await _finish(store, claimed)
    assert [i for i in order if rows[i][0] == "customer:a"] == [
        i for i in ids if rows[i][0] == "customer:a"
    ]
    assert len(order) == 6


async def test_an_eager_activity_its_queue_refuses_waits_pending(
    store: PostgresStore, database_url: str
) -> None:
    # A worker runs an activity ahead of the write that admits it only on queues it saw
    # unlimited; one limited since is refused at the write, and inserted to wait its turn.
    worker = await _worker(store, "eager")
    parent = await app.approval.queue("eager parent")

    def plan(child: str, seq: int) -> str:
        child_row = {
            "id": child, "kind": "activity", "name": "m.f", "queue": "eager", "priority": 0,
            "args": "{}", "max_retries": 0, "timeout_seconds": 60, "version": None,
            "workflow_timeout": None, "parent_id": parent, "parent_seq": seq,
            "concurrency_key": None, "concurrency_limit": None, "rate_key": None, "eager": True,
        }  # fmt: skip
        step = {"seq": seq, "kind": "activity", "name": "m.f", "status": "scheduled",
                "exec": child, "seconds": None, "result": None, "delivered": None}  # fmt: skip
        return json.dumps([{"wf": parent, "steps": [step], "children": [child_row]}])

    admitted, refused = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            b"SELECT workflows.insert_plans(%s::uuid, %s::jsonb)", (worker, plan(admitted, 1))
        )
        await queues.pause("eager")
        conn.execute(
            b"SELECT workflows.insert_plans(%s::uuid, %s::jsonb)", (worker, plan(refused, 2))
        )
        rows = dict(
            conn.execute(
                b"SELECT id::text, status FROM workflows.executions WHERE queue = 'eager'"
            ).fetchall()
        )
    assert rows == {admitted: "running", refused: "pending"}


@workflows.activity(queue="acts")
async def gated_step(name: str) -> str:
    return await jobs_app.wait_for_gate(name)


@workflows.workflow(queue="limited-wf")
async def one_gated_step(name: str) -> str:
    return await gated_step.run(name)


async def test_a_workflow_its_last_activity_ends_waits_for_room_in_its_queue(
    start_worker: Any,
) -> None:
    # The activity's outcome comes with the activation that ends the workflow, which needs a
    # slot of the workflow's queue: with none free, the outcome is recorded, the workflow
    # waits (pending, its step not delivered), and ends once a slot frees.
    await queues.set_limit("limited-wf", concurrency=1)
    await start_worker("limited-wf", "acts")
    wf = await one_gated_step.queue("wf")
    for _ in range(500):
        if "wf" in jobs_app.gate:
            break
        await asyncio.sleep(0.01)
    blocker = await jobs_app.wait_for_gate.options(queue="limited-wf").queue("blocker")
    for _ in range(500):
        if (await workflows.get_status(blocker))["status"] == "running":
            break
        await asyncio.sleep(0.01)
    jobs_app.gate["wf"].set()
    for _ in range(500):
        status = await workflows.get_status(wf)
        if status["status"] == "pending":
            break
        await asyncio.sleep(0.01)
    assert status["status"] == "pending"
    assert status["waiting_for"] == "queue limited-wf is at its concurrency limit (1)"
    jobs_app.gate.setdefault("blocker", asyncio.Event()).set()
    assert await workflows.get_result(wf, timeout=30) == "wf"
    assert await workflows.get_result(blocker, timeout=30) == "blocker"
