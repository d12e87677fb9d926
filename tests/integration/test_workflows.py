"""Durable workflows through real workers: replay, activities, signals, timers, versions."""

from __future__ import annotations

import asyncio

import pytest

import workflows
from tests.integration import workflows_app as app
from tests.integration.conftest import StartWorker, wait_status
from workflows import SignalError
from workflows.api import REGISTRY, WorkflowFunction
from workflows_postgres.store import PostgresStore


@pytest.fixture(autouse=True)
def _reset() -> None:
    app.runs.clear()
    app.flaky_attempts.clear()


async def steps(store: PostgresStore, workflow_id: str) -> list[dict[str, object]]:
    return await store.steps_of(workflow_id)


async def wait_steps(store: PostgresStore, workflow_id: str, count: int) -> None:
    """Until the workflow's history holds ``count`` steps (its activation got applied)."""
    for _ in range(1000):
        if len(await steps(store, workflow_id)) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"workflow {workflow_id} never reached {count} steps")


async def test_quickstart_workflow_runs_each_activity_once(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    wf = await app.process_order.queue("order_123", 99.5, "a@b.c", "tok")
    result = await workflows.get_result(wf, timeout=30)
    assert result == {"order_id": "order_123", "transaction_id": "txn_123"}
    assert app.runs == {"charge_card": 1, "send_receipt": 1}
    status = await store.get_status(wf)
    assert status["kind"] == "workflow" and status["version"] == 1
    recorded = await steps(store, wf)
    assert [(s["kind"], s["name"], s["status"]) for s in recorded] == [
        ("activity", "tests.integration.workflows_app:charge_card", "completed"),
        ("activity", "tests.integration.workflows_app:send_receipt", "completed"),
    ]
    activity_ids = [s["execution_id"] for s in recorded]
    for aid in activity_ids:
        child = await store.get_status(str(aid))
        assert child["kind"] == "activity" and child["parent_id"] == wf


async def test_workflow_waits_while_activity_runs(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    wf = await app.timeouts_seen.queue(0.1, 5.0)
    await start_worker("orders")
    # While its activity sleeps, the workflow is suspended, not holding a slot.
    status = await wait_status(store, wf, {"waiting", "completed"})
    assert status["status"] == "waiting"
    assert await workflows.get_result(wf, timeout=30) == "slow done"


@pytest.mark.parametrize("approved", [True, False])
async def test_approval_signal(
    store: PostgresStore, start_worker: StartWorker, approved: bool
) -> None:
    await start_worker("orders")
    wf = await app.approval.queue("o1")
    await wait_status(store, wf, {"waiting"})
    await wait_steps(store, wf, 2)
    await workflows.send_signal(wf, "approved", {"approved": approved})
    result = await workflows.get_result(wf, timeout=30)
    expected = "approved" if approved else "rejected"
    assert result["status"] == expected
    assert app.runs["charge_card"] == 1


async def test_signal_sent_before_the_wait_is_kept(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    wf = await app.approval.queue("early")
    workflows.send_signal_sync(wf, "approved", {"approved": True})
    await start_worker("orders")
    assert (await workflows.get_result(wf, timeout=30))["status"] == "approved"


async def test_signals_of_one_name_delivered_in_order_each_once(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    wf = await app.collect_signals.queue(4)
    await workflows.send_signal(wf, "item", 1)
    await workflows.send_signal(wf, "item", 2)
    await start_worker("orders")
    await workflows.send_signal(wf, "item", 3)
    await workflows.send_signal(wf, "item", 4)
    assert await workflows.get_result(wf, timeout=30) == [1, 2, 3, 4]


async def test_signal_timeout_raises_timeout_error(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    wf = await app.approval_or_timeout.queue(0.3)
    assert await workflows.get_result(wf, timeout=30) == "timed out"


async def test_signal_to_unknown_or_finished_workflow_is_an_error(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    with pytest.raises(SignalError, match="no workflow"):
        await workflows.send_signal("00000000-0000-0000-0000-000000000000", "x", 1)
    await start_worker("orders")
    wf = await app.fan_out.queue(1)
    await workflows.get_result(wf, timeout=30)
    with pytest.raises(SignalError, match="already completed"):
        await workflows.send_signal(wf, "x", 1)
    with pytest.raises(SignalError, match="already completed"):
        workflows.send_signal_sync(wf, "x", 1)


async def test_activity_retries_seen_from_workflow(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    ok = await app.retries_seen.queue("k1", 2)
    assert await workflows.get_result(ok, timeout=30) == "k1 ok"
    gave_up = await app.retries_seen.queue("k2", 5)
    assert (
        await workflows.get_result(gave_up, timeout=30) == "gave up: ConnectionError: transient 3"
    )
    assert app.flaky_attempts == {"k1": 3, "k2": 3}


async def test_activity_timeout_and_options_override(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    short = await app.timeouts_seen.queue(1.0, None)
    assert await workflows.get_result(short, timeout=30) == "activity failed: TimeoutError"
    longer = await app.timeouts_seen.queue(0.4, 5.0)
    assert await workflows.get_result(longer, timeout=30) == "slow done"
    recorded = await steps(store, longer)
    activity_status = await store.get_status(str(recorded[0]["execution_id"]))
    assert activity_status["timeout"] == 5.0


async def test_uncaught_activity_error_fails_workflow(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    wf = await app.uncaught.queue("k3")
    with pytest.raises(workflows.ExecutionFailedError) as caught:
        await workflows.get_result(wf, timeout=30)
    assert caught.value.type == "ActivityError"
    assert "ConnectionError" in caught.value.message


async def test_gather_fans_out_in_parallel_and_keeps_order(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders", concurrency=20)
    wf = await app.fan_out.queue(12)
    assert await workflows.get_result(wf, timeout=30) == [i * 2 for i in range(12)]
    recorded = await steps(store, wf)
    assert len(recorded) == 12
    assert app.runs["double"] == 12


async def test_durable_sleep_holds_no_slot(store: PostgresStore, start_worker: StartWorker) -> None:
    await start_worker("orders", concurrency=1)
    wf = await app.sleepy.queue(1.0)
    await wait_status(store, wf, {"waiting"})
    # The only slot is free while the timer runs: another workflow completes meanwhile.
    other = await app.fan_out.queue(2)
    assert await workflows.get_result(other, timeout=30) == [0, 2]
    assert (await store.get_status(wf))["status"] == "waiting"
    assert await workflows.get_result(wf, timeout=30) == "rested"


async def test_child_workflow(store: PostgresStore, start_worker: StartWorker) -> None:
    await start_worker("orders")
    wf = await app.parent.queue(5)
    assert await workflows.get_result(wf, timeout=30) == {"child": 11, "double": 22}
    recorded = await steps(store, wf)
    assert recorded[0]["kind"] == "child"
    child = await store.get_status(str(recorded[0]["execution_id"]))
    assert child["kind"] == "workflow" and child["parent_id"] == wf and child["result"] == 11


async def test_cancel_workflow_cancels_children_and_timers(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    wf = await app.parent_of_sleeper.queue()
    await wait_status(store, wf, {"waiting"})
    await wait_steps(store, wf, 1)
    child_id = str((await steps(store, wf))[0]["execution_id"])
    await wait_status(store, child_id, {"waiting"})
    assert await workflows.cancel(wf) == "cancelled"
    assert (await store.get_status(wf))["status"] == "cancelled"
    assert (await store.get_status(child_id))["status"] == "cancelled"
    child_steps = await steps(store, child_id)
    assert [s["status"] for s in child_steps] == ["cancelled"]
    with pytest.raises(workflows.ExecutionCancelledError):
        await workflows.get_result(wf, timeout=5)


async def test_workflow_past_its_timeout_fails_and_cancels_what_it_started(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    wf = await app.with_deadline.options(timeout=0.5).queue(3600)
    status = await wait_status(store, wf, {"failed"})
    assert status["error"]["type"] == "WorkflowTimeoutError"
    assert [s["status"] for s in await steps(store, wf)] == ["cancelled"]


async def test_get_status_and_sync_twins(store: PostgresStore, start_worker: StartWorker) -> None:
    await start_worker("orders")
    wf = await app.fan_out.queue(3)
    assert await workflows.get_result(wf, timeout=30) == [0, 2, 4]
    status = await workflows.get_status(wf)
    assert status["status"] == "completed" and status["result"] == [0, 2, 4]
    assert await asyncio.to_thread(workflows.get_result_sync, wf, 5) == [0, 2, 4]
    assert (await asyncio.to_thread(workflows.get_status_sync, wf))["id"] == wf
    pending = await app.sleepy.queue(3600)
    with pytest.raises(TimeoutError):
        await workflows.get_result(pending, timeout=0.3)


def _as_version(version: int, body: object) -> WorkflowFunction[..., object]:
    """Play a redeploy: the registry entry of `evolving` now runs other code."""
    fn = REGISTRY[app.evolving.path]
    assert isinstance(fn, WorkflowFunction)
    fn.fn = body  # type: ignore[assignment]
    fn.version = version
    return fn


@pytest.fixture
def restore_evolving() -> object:
    original = app.evolving.fn, app.evolving.version
    yield
    app.evolving.fn, app.evolving.version = original


async def test_versioning_round_trip(
    store: PostgresStore, start_worker: StartWorker, restore_evolving: object
) -> None:
    worker_v1 = await start_worker("versioned")
    old = await app.evolving.queue("in flight")
    await wait_status(store, old, {"waiting"})
    await wait_steps(store, old, 2)
    worker_v1.stop()
    await asyncio.sleep(0)
    # Redeploy: version 2 guards a new step with get_version.
    _as_version(2, app.evolving_v2_body)
    await start_worker("versioned")
    await workflows.send_signal(old, "go")
    assert await workflows.get_result(old, timeout=30) == ["a", "finished"]
    assert app.runs.get("step_b") is None
    new = await app.evolving.queue("new")
    await wait_status(store, new, {"waiting"})
    await workflows.send_signal(new, "go")
    assert await workflows.get_result(new, timeout=30) == ["a", "b", "finished"]
    assert (await store.get_status(new))["version"] == 2
    kinds = [(s["kind"], s["name"]) for s in await steps(store, new)]
    assert ("version", "add_step_b") in kinds


async def test_worker_leaves_newer_version_to_newer_worker(
    store: PostgresStore, start_worker: StartWorker, restore_evolving: object
) -> None:
    _as_version(2, app.evolving_v2_body)
    wf = await app.evolving.queue("from new code")
    _as_version(1, app.evolving.fn)
    old_worker = await start_worker("versioned")
    # An old worker claims the other work but leaves version 2 alone.
    other = await app.sleepy.options(queue="versioned").queue(0)
    assert await workflows.get_result(other, timeout=30) == "rested"
    assert (await store.get_status(wf))["status"] == "pending"
    old_worker.stop()
    _as_version(2, app.evolving_v2_body)
    await start_worker("versioned")
    await wait_status(store, wf, {"waiting"})
    await workflows.send_signal(wf, "go")
    assert await workflows.get_result(wf, timeout=30) == ["a", "b", "finished"]


async def test_non_determinism_fails_naming_the_divergence(
    store: PostgresStore, start_worker: StartWorker, restore_evolving: object
) -> None:
    first = await start_worker("versioned")
    wf = await app.evolving.queue("x")
    await wait_status(store, wf, {"waiting"})
    await wait_steps(store, wf, 2)
    first.stop()
    _as_version(1, app.diverging_body)
    await start_worker("versioned")
    await workflows.send_signal(wf, "go")
    status = await wait_status(store, wf, {"failed"})
    assert status["error"]["type"] == "NonDeterminismError"
    message = status["error"]["message"]
    assert "step 0" in message
    assert "workflows_app:step_a" in message and "workflows_app:step_b" in message


SHAPE_SEEN = {"keys": ["b", "a", "c"], "a": "1e+16", "inner": ["z", "y"]}


@pytest.mark.parametrize("sticky", ["0", "100"])
async def test_workflow_sees_an_activity_result_exactly_as_returned(
    store: PostgresStore,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
    sticky: str,
) -> None:
    # With a copy in memory the result goes straight to the code; without, it comes back from
    # the database. Either way: the same keys in the same order, a float still a float.
    monkeypatch.setenv("WORKFLOWS_WORKER_STICKY_CACHE", sticky)
    await start_worker("orders")
    wf = await app.sees_shape.queue(False)
    assert await workflows.get_result(wf, timeout=30) == SHAPE_SEEN


async def test_replay_reads_back_the_value_the_code_was_handed(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    first = await start_worker("orders")
    wf = await app.sees_shape.queue(True)
    await wait_steps(store, wf, 2)
    await wait_status(store, wf, {"waiting"})
    first.stop()
    for _ in range(1000):
        if not first.healthy():
            break
        await asyncio.sleep(0.01)
    # A worker that never saw the workflow replays it from what was stored.
    await start_worker("orders")
    await workflows.send_signal(wf, "go", None)
    assert await workflows.get_result(wf, timeout=30) == SHAPE_SEEN
    # Replayed from history: the activity's recorded result was used, not run again.
    assert app.runs == {"shaped": 1}
