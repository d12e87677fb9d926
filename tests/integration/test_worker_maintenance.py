"""Maintenance on its own: the lead, the leader's sweep and recovery, each worker's audit."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import pytest

from tests.integration.conftest import until, wait_status
from workflows import job, sleep, workflow
from workflows.config import Settings
from workflows.errors import ExecutionNotFoundError
from workflows.records import Registration
from workflows_postgres.store import PostgresStore
from workflows_worker.audit import Audit
from workflows_worker.maintenance import Maintenance
from workflows_worker.metrics import WorkerMetrics
from workflows_worker.wakeup import Wakeup
from workflows_worker.worker import Worker

QUEUE = "upkeep"


@job(queue=QUEUE, retries=1)
async def chore(key: str) -> str:
    return key


@workflow(queue=QUEUE)
async def napper() -> str:
    await sleep(0.01)
    return "woke"


async def maintenance(
    store: PostgresStore,
    *,
    steady: Callable[[], bool] = lambda: True,
    running: frozenset[str] = frozenset(),
) -> tuple[str, Maintenance, WorkerMetrics, Wakeup]:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    metrics, wakeup = WorkerMetrics([QUEUE]), Wakeup()
    wakeup.looking = False
    m = Maintenance(
        store,
        worker_id,
        [QUEUE],
        Settings.from_env(),
        audit=Audit(store, worker_id, running),
        metrics=metrics,
        wakeup=wakeup,
        steady=steady,
        stuck=lambda: 0,
    )
    return worker_id, m, metrics, wakeup


async def terms(store: PostgresStore) -> list[dict[str, object]]:
    rows = await store.pool.fetch(
        "SELECT term, worker_id::text AS worker_id, began_at, renewed_at, expires_at "
        "FROM workflows.leader_terms ORDER BY term"
    )
    return [dict(r) for r in rows]


async def test_one_worker_leads_at_a_time_and_resigning_hands_the_lead_over_at_once(
    store: PostgresStore,
) -> None:
    first_id, first, _, _ = await maintenance(store)
    second_id, second, _, _ = await maintenance(store)
    assert await first.lead()
    assert not await second.lead()
    assert (first.leading, second.leading) == (True, False)
    # Renewed: the same term, lasting longer.
    [before] = await terms(store)
    assert await first.lead()
    [renewed] = await terms(store)
    assert (renewed["term"], renewed["worker_id"]) == (before["term"], first_id)
    assert renewed["expires_at"] > before["expires_at"]  # type: ignore[operator]
    await first.resign()
    assert not first.leading
    assert await second.lead()
    one, two = await terms(store)
    assert (one["worker_id"], two["worker_id"]) == (first_id, second_id)
    assert two["began_at"] >= one["expires_at"]  # type: ignore[operator]


async def test_only_the_leader_fires_due_timers(store: PostgresStore) -> None:
    _, leader, _, leader_wakeup = await maintenance(store)
    _, follower, follower_metrics, _ = await maintenance(store)
    assert await leader.lead()
    workflow_id = await napper.queue()
    # A worker of the test's own runs the workflow to its timer.
    worker = Worker([QUEUE], settings=Settings.from_env(), burst=True)
    await asyncio.wait_for(worker.run(), 20)
    assert (await store.get_status(workflow_id))["status"] == "waiting"
    # Due at once, but the follower's loop leaves it: it does not lead.
    following = asyncio.create_task(follower.run())
    try:
        await until(
            lambda: follower_metrics.registry.get_sample_value("workflows_workers_alive"),
            "the follower's first round",
        )
        assert not follower.leading
        assert (await store.get_status(workflow_id))["status"] == "waiting"
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    await leader.sweep()
    assert leader_wakeup.looking  # what the timer made runnable: the pump looks at once
    assert (await store.get_status(workflow_id))["status"] == "pending"


async def test_the_leader_recovers_a_dead_peer_only_once_its_own_beats_are_steady(
    store: PostgresStore,
) -> None:
    steady = [False]
    _, leader, metrics, wakeup = await maintenance(store, steady=lambda: steady[0])
    dead = str(uuid.uuid4())
    await store.register_worker(dead, Registration("gone", 2, (QUEUE,), "test"))
    job_id = await chore.queue("lost")
    _, [c] = await store.pump(dead, [], [QUEUE], 1)
    assert c.id == job_id
    await store.pool.execute(
        "UPDATE workflows.worker_heartbeats SET last_heartbeat = now() - interval '1 hour' "
        "WHERE worker_id = $1::uuid",
        dead,
    )
    assert await leader.lead()
    await leader.recover()
    assert (await store.get_status(job_id))["status"] == "running"
    steady[0] = True
    await leader.recover()
    status = await wait_status(store, job_id, {"pending"})
    assert (status["attempts"], status["error"]["type"]) == (1, "WorkerLost")
    assert wakeup.looking
    assert metrics.registry.get_sample_value("workflows_worker_recoveries_total") == 1


async def test_the_audit_gives_back_what_runs_here_in_name_only_seen_twice(
    store: PostgresStore,
) -> None:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    orphan, busy = await chore.queue("orphan"), await chore.queue("busy")
    _, claimed = await store.pump(worker_id, [], [QUEUE], 2)
    assert {c.id for c in claimed} == {orphan, busy}
    audit = Audit(store, worker_id, {busy})
    # Once could be a claim whose reply is still on its way: only suspected.
    assert await audit.run() == []
    assert await audit.run() == [orphan]
    status = await wait_status(store, orphan, {"pending"})
    assert status["attempts"] == 0
    assert (await store.get_status(busy))["status"] == "running"


async def _lose(store: PostgresStore, job_id: str) -> str:
    """Claim ``job_id`` as a worker that then dies (its beats an hour old)."""
    dead = str(uuid.uuid4())
    await store.register_worker(dead, Registration("gone", 2, (QUEUE,), "test"))
    _, [c] = await store.pump(dead, [], [QUEUE], 1)
    assert c.id == job_id
    await store.pool.execute(
        "UPDATE workflows.worker_heartbeats SET last_heartbeat = now() - interval '1 hour' "
        "WHERE worker_id = $1::uuid",
        dead,
    )
    return dead


def _finished(metrics: WorkerMetrics, kind: str, status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "workflows_executions_finished_total", {"queue": QUEUE, "kind": kind, "status": status}
    )


async def test_a_job_whose_cancel_its_dead_worker_never_saw_ends_cancelled_not_run_again(
    store: PostgresStore,
) -> None:
    _, leader, metrics, _ = await maintenance(store)
    job_id = await chore.queue("cancelled-in-flight")
    await _lose(store, job_id)
    # Its worker is told to stop it, but is dead: the cancel waits on recovery.
    assert await store.cancel(job_id) == "cancelling"
    assert await leader.lead()
    await leader.recover()
    status = await store.get_status(job_id)
    # Retries were left (retries=1, one attempt): without the cancel it would run again.
    assert (status["status"], status["error"]["type"]) == ("cancelled", "ExecutionCancelledError")
    assert _finished(metrics, "job", "cancelled") == 1


async def test_recovery_that_fails_a_job_for_good_counts_it_as_finished(
    store: PostgresStore,
) -> None:
    _, leader, metrics, _ = await maintenance(store)
    job_id = await chore.options(retries=0).queue("last-attempt")
    await _lose(store, job_id)
    assert await leader.lead()
    await leader.recover()
    assert (await store.get_status(job_id))["status"] == "failed"
    assert _finished(metrics, "job", "failed") == 1
    lost = {"queue": QUEUE, "kind": "job", "outcome": "lost"}
    assert metrics.registry.get_sample_value("workflows_attempts_total", lost) == 1


async def test_a_workflow_failed_past_its_timeout_by_the_sweep_counts_as_finished(
    store: PostgresStore,
) -> None:
    _, leader, metrics, _ = await maintenance(store)
    workflow_id = await napper.queue()
    await store.pool.execute(
        "UPDATE workflows.executions SET deadline = now() - interval '1 second' "
        "WHERE id = $1::uuid",
        workflow_id,
    )
    assert await leader.lead()
    await leader.sweep()
    status = await store.get_status(workflow_id)
    assert (status["status"], status["error"]["type"]) == ("failed", "WorkflowTimeoutError")
    assert _finished(metrics, "workflow", "failed") == 1


async def test_the_leader_prunes_what_is_past_its_retention_and_counts_it(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_RETENTION", "1h")
    _, leader, metrics, _ = await maintenance(store)
    old, recent = await chore.queue("old"), await chore.queue("recent")
    worker = Worker([QUEUE], settings=Settings.from_env(), burst=True)
    await asyncio.wait_for(worker.run(), 20)
    await store.pool.execute(
        "UPDATE workflows.executions SET finished_at = now() - interval '2 hours' "
        "WHERE id = $1::uuid",
        old,
    )
    assert await leader.lead()
    assert await leader.prune() == 1
    assert metrics.registry.get_sample_value("workflows_pruned_executions_total") == 1
    assert (await store.get_status(recent))["status"] == "completed"
    with pytest.raises(ExecutionNotFoundError):
        await store.get_status(old)


async def test_a_row_due_at_minus_infinity_reads_as_waiting_forever_not_a_failed_sample(
    store: PostgresStore,
) -> None:
    _, leader, metrics, _ = await maintenance(store)
    await store.pool.execute(
        "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, run_at) "
        "VALUES (gen_random_uuid(), 'job', 'odd:job', $1, '{\"args\": [], \"kwargs\": {}}', 0, "
        "'-infinity')",
        QUEUE,
    )
    await leader.sample_gauges()
    age = metrics.registry.get_sample_value(
        "workflows_queue_oldest_pending_age_seconds", {"queue": QUEUE}
    )
    assert age == float("inf")
    depth = {"queue": QUEUE, "status": "pending"}
    assert metrics.registry.get_sample_value("workflows_queue_depth", depth) == 1
