"""Jobs end to end: enqueue, claim, run, retry, finish, on a real PostgreSQL with real workers."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

import workflows
from tests.integration import jobs_app, workflows_app
from tests.integration.conftest import StartWorker, wait_status
from workflows import ConfigurationError, SchemaNotReadyError, SerializationError
from workflows.api import Function
from workflows_postgres.store import PostgresStore


async def count_rows(store: PostgresStore) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM workflows.executions"))


async def test_job_runs_and_records_result(store: PostgresStore, start_worker: StartWorker) -> None:
    job_id = await jobs_app.send_email.queue(to="a@b.c", subject="Hi", body="x")
    assert (await store.get_status(job_id))["status"] == "pending"
    await start_worker("emails")
    assert await workflows.get_result(job_id, timeout=20) == {"sent": True}
    status = await store.get_status(job_id)
    assert status["status"] == "completed"
    assert status["attempts"] == 1
    assert status["kind"] == "job"
    assert status["name"] == "tests.integration.jobs_app:send_email"
    assert status["started_at"] and status["finished_at"]
    assert jobs_app.calls == [("send_email", "a@b.c")]


async def test_notification_wakes_idle_worker_long_before_poll(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_POLL_INTERVAL", "60")
    await start_worker("work")
    job_id = await jobs_app.record.queue("notified")
    # With a 60 s poll, finishing within 10 s proves LISTEN/NOTIFY woke the worker.
    assert await workflows.get_result(job_id, timeout=10) == "notified"


async def test_retries_then_succeeds_records_three_attempts(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.flaky.queue("k", failures=2)
    await start_worker("work")
    assert await workflows.get_result(job_id, timeout=20) == "ok after 3"
    status = await store.get_status(job_id)
    assert status["status"] == "completed"
    assert status["attempts"] == 3
    assert jobs_app.attempts["k"] == 3


async def test_retries_exhausted_fails_after_two_attempts_keeping_error(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.always_fails.queue("x")
    await start_worker("work")
    with pytest.raises(workflows.ExecutionFailedError) as caught:
        await workflows.get_result(job_id, timeout=20)
    assert caught.value.type == "ValueError"
    status = await store.get_status(job_id)
    assert status["status"] == "failed"
    assert status["attempts"] == 2
    assert status["error"]["type"] == "ValueError"
    assert status["error"]["message"] == "boom x"
    assert "always_fails" in status["error"]["traceback"]
    assert jobs_app.attempts["x"] == 2


async def test_timeout_cancels_attempt_and_records_timeout(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.too_slow.queue()
    await start_worker("work")
    status = await wait_status(store, job_id, {"failed"})
    assert status["attempts"] == 1
    assert status["error"]["type"] == "TimeoutError"
    assert "timed out" in status["error"]["message"]


async def test_options_timeout_and_retries_override_decorator(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.sleeper.options(timeout=0.1, retries=1).queue(5)
    await start_worker("work")
    status = await wait_status(store, job_id, {"failed"})
    assert status["attempts"] == 2
    assert status["error"]["type"] == "TimeoutError"


async def test_higher_priority_runs_first(store: PostgresStore, start_worker: StartWorker) -> None:
    low = await jobs_app.record.queue("low")
    high = await jobs_app.record.options(priority=10).queue("high")
    mid = await jobs_app.record.options(priority=5).queue("mid")
    await start_worker("work", concurrency=1)
    for job_id in (low, high, mid):
        await workflows.get_result(job_id, timeout=20)
    assert [tag for _, tag in jobs_app.calls] == ["high", "mid", "low"]


async def test_options_queue_routes_to_other_queue(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.record.options(queue="high-priority").queue("routed")
    assert (await store.get_status(job_id))["queue"] == "high-priority"
    await start_worker("high-priority")
    assert await workflows.get_result(job_id, timeout=20) == "routed"


async def test_delay_and_run_at_defer_start(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    later = await jobs_app.record.options(run_at=datetime.now(UTC) + timedelta(hours=1)).queue(
        "later"
    )
    soon = await jobs_app.record.options(delay=0.5).queue("soon")
    now = await jobs_app.record.queue("now")
    await start_worker("work")
    await workflows.get_result(now, timeout=20)
    assert (await store.get_status(soon))["status"] == "pending"
    status = await wait_status(store, soon, {"completed"})
    assert datetime.fromisoformat(status["started_at"]) >= datetime.fromisoformat(
        status["created_at"]
    ) + timedelta(seconds=0.5)
    assert (await store.get_status(later))["status"] == "pending"


async def test_sync_function_runs_in_thread_without_blocking_loop(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    slow = await jobs_app.sync_sleep.queue(1.5)
    await start_worker("work", concurrency=4)
    fast = await jobs_app.record.queue("meanwhile")
    assert await workflows.get_result(fast, timeout=20) == "meanwhile"
    # The async job finished while the sync one was still sleeping in its thread.
    assert (await store.get_status(slow))["status"] == "running"
    thread_id = await workflows.get_result(slow, timeout=20)
    assert thread_id != threading.get_ident()


async def test_concurrency_limit_is_respected(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    ids = [await jobs_app.count_concurrency.queue(0.2) for _ in range(8)]
    await start_worker("work", concurrency=3)
    for job_id in ids:
        await workflows.get_result(job_id, timeout=30)
    assert jobs_app.concurrent_max == 3


async def test_idempotency_key_under_concurrent_enqueue(store: PostgresStore) -> None:
    handle = jobs_app.record.options(idempotency_key="order-42")
    ids = await asyncio.gather(*(handle.queue(f"try {i}") for i in range(20)))
    assert len(set(ids)) == 1
    assert await count_rows(store) == 1
    sync_id = handle.queue_sync("again")
    assert sync_id == ids[0]
    assert await count_rows(store) == 1


async def test_sync_enqueue_without_event_loop(store: PostgresStore) -> None:
    job_id = await asyncio.to_thread(jobs_app.record.queue_sync, "from a thread")
    assert (await store.get_status(job_id))["args"] == {"args": ["from a thread"], "kwargs": {}}


async def test_enqueue_in_callers_psycopg_transaction(
    database_url: str, store: PostgresStore
) -> None:
    listener = await asyncpg.connect(database_url)
    heard: list[str] = []
    await listener.add_listener(store.q.work_channel, lambda *a: heard.append(a[3]))
    try:
        with psycopg.connect(database_url) as conn:
            committed = jobs_app.record.options(conn=conn).queue_sync("committed")
            # Not visible to others, and not announced, before the commit.
            assert await count_rows(store) == 0
            conn.commit()
        with psycopg.connect(database_url) as conn:
            jobs_app.record.options(conn=conn).queue_sync("rolled back")
            conn.rollback()
        await asyncio.sleep(0.2)  # let a notification (if any was sent) arrive
        assert await count_rows(store) == 1
        assert (await store.get_status(committed))["status"] == "pending"
        assert heard == ["work"]
    finally:
        await listener.close()


async def test_enqueue_in_callers_asyncpg_transaction(
    database_url: str, store: PostgresStore
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            kept = await jobs_app.record.options(conn=conn).queue("kept")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await jobs_app.record.options(conn=conn).queue("dropped")
                raise RuntimeError("the caller's transaction fails")
    finally:
        await conn.close()
    assert await count_rows(store) == 1
    assert (await store.get_status(kept))["args"]["args"] == ["kept"]


async def test_wrong_driver_connection_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with pytest.raises(ConfigurationError, match="queue_sync"):
            await jobs_app.record.options(conn=conn).queue("x")


async def test_unserializable_argument_refused_and_nothing_enqueued(store: PostgresStore) -> None:
    with pytest.raises(SerializationError, match="not JSON-serializable"):
        await jobs_app.record.queue(object())  # type: ignore[arg-type]
    with pytest.raises(SerializationError):
        await jobs_app.record.queue(float("nan"))  # type: ignore[arg-type]
    assert await count_rows(store) == 0


async def test_payload_over_limit_refused(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_MAX_PAYLOAD_BYTES", "1000")
    with pytest.raises(SerializationError, match="WORKFLOWS_MAX_PAYLOAD_BYTES"):
        await jobs_app.record.queue("x" * 2000)
    assert await count_rows(store) == 0


async def test_unserializable_result_fails_execution_clearly(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.bad_result.queue()
    await start_worker("work")
    status = await wait_status(store, job_id, {"failed"})
    assert status["error"]["type"] == "SerializationError"
    assert "result is not JSON-serializable" in status["error"]["message"]


async def test_unknown_function_fails_once_without_crashing_worker(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    async with store.pool.acquire() as conn:
        missing = await conn.fetchval(
            "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries) "
            "VALUES (gen_random_uuid(), 'job', 'no_such_module:nope', 'work', "
            '\'{"args": [], "kwargs": {}}\', 5) RETURNING id::text'
        )
        undecorated = await conn.fetchval(
            "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries) "
            "VALUES (gen_random_uuid(), 'job', 'tests.integration.jobs_app:plain_function', "
            "'work', '{\"args\": [], \"kwargs\": {}}', 5) RETURNING id::text"
        )
    worker = await start_worker("work")
    first = await wait_status(store, missing, {"failed"})
    second = await wait_status(store, undecorated, {"failed"})
    assert first["attempts"] == 1 and second["attempts"] == 1
    assert "no module named 'no_such_module'" in first["error"]["message"]
    assert "not a @job, @activity or @workflow" in second["error"]["message"]
    # The worker is still serving.
    assert await workflows.get_result(await jobs_app.record.queue("alive"), timeout=20) == "alive"
    assert worker.healthy()


def test_invalid_options_refused() -> None:
    with pytest.raises(ConfigurationError, match="queue"):
        jobs_app.record.options(queue="bad queue; DROP TABLE x")
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        jobs_app.record.options(run_at=datetime(2030, 1, 1))
    with pytest.raises(ConfigurationError, match="retries"):
        jobs_app.record.options(retries=-1)
    with pytest.raises(ConfigurationError, match="priority"):
        jobs_app.record.options(priority="high")  # type: ignore[arg-type]


async def test_cancel_pending_and_running(store: PostgresStore, start_worker: StartWorker) -> None:
    pending = await jobs_app.record.options(delay=3600).queue("never")
    assert await workflows.cancel(pending) == "cancelled"
    assert (await store.get_status(pending))["status"] == "cancelled"
    running = await jobs_app.wait_for_gate.queue("gate")
    await start_worker("work")
    await wait_status(store, running, {"running"})
    await asyncio.wait_for(jobs_app.started.wait(), 10)
    assert await workflows.cancel(running) == "cancelling"
    status = await wait_status(store, running, {"cancelled"})
    assert status["error"]["type"] == "ExecutionCancelledError"
    assert await workflows.cancel(running) == "already cancelled"


async def test_burst_worker_exits_when_queue_empty(database_url: str, store: PostgresStore) -> None:
    from workflows.config import Settings
    from workflows_worker.worker import Worker

    ids = [await jobs_app.record.queue(str(i)) for i in range(5)]
    await asyncio.wait_for(Worker(["work"], settings=Settings.from_env(), burst=True).run(), 20)
    statuses = [(await store.get_status(i))["status"] for i in ids]
    assert statuses == ["completed"] * 5


async def test_shutdown_waits_for_inflight_then_releases_the_rest(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_SHUTDOWN_GRACE", "1")
    quick = await jobs_app.sleeper.queue(0.3)
    stuck = await jobs_app.sleeper.queue(60)
    worker = await start_worker("work", concurrency=2)
    await wait_status(store, quick, {"running"})
    await wait_status(store, stuck, {"running"})
    worker.stop()
    await wait_status(store, quick, {"completed"})
    status = await wait_status(store, stuck, {"pending"})
    # Released, not failed: the interrupted attempt does not count.
    assert status["attempts"] == 0


async def test_claim_query_walks_the_claim_index(store: PostgresStore) -> None:
    await jobs_app.record.queue_many([((str(i),), {}) for i in range(2000)])
    async with store.pool.acquire() as conn:
        await conn.execute("ANALYZE workflows.executions")
        # The candidates of a claim are chosen inside admit() (0006): plan that query, the
        # function's arguments as parameters, without running it.
        source = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE proname = 'admit' "
            "AND pronamespace = 'workflows'::regnamespace"
        )
        start = source.index("ANY (ARRAY(") + len("ANY (ARRAY(")
        end = source.index("LIMIT p_limit))", start) + len("LIMIT p_limit")
        query = source[start:end]
        for n, (name, kind) in enumerate(
            [
                ("p_worker", "uuid"),
                ("p_queues", "text[]"),
                ("p_limit", "int"),
                ("p_names", "text[]"),
                ("p_max", "int[]"),
                ("p_exclude", "uuid[]"),
            ],
            start=1,
        ):
            query = re.sub(rf"\b{name}\b", f"${n}::{kind}", query)
        plan = await conn.fetch(
            "EXPLAIN " + query, "00000000-0000-0000-0000-000000000001", ["work"], 10, [], [], []
        )
    text = "\n".join(row[0] for row in plan)
    assert "executions_claim" in text, text
    assert "Seq Scan on executions" not in text, text


async def test_key_lookups_stay_on_indexes_planned_on_a_small_table(
    store: PostgresStore,
) -> None:
    # A new deployment: a few rows, analyzed. The plan made now is kept for the connection's
    # life, while the table grows to millions: it must not be a scan of the whole table.
    await jobs_app.record.queue_many([((str(i),), {}) for i in range(5)])
    await store.pool.execute("ANALYZE workflows.executions")
    await store.pool.execute("ANALYZE workflows.workflow_steps")
    statements = [
        "UPDATE workflows.executions SET status = 'completed' "
        "WHERE id = $1::uuid AND lease = $2 AND status = 'running'",
        "UPDATE workflows.workflow_steps SET status = 'completed' "
        "WHERE workflow_id = $1::uuid AND seq = $2 AND status = 'scheduled'",
    ]
    async with store.pool.acquire() as conn:
        for sql in statements:
            plan = await conn.fetch("EXPLAIN " + sql, "00000000-0000-0000-0000-000000000001", 1)
            text = "\n".join(row[0] for row in plan)
            assert "Index Scan" in text and "Seq Scan" not in text, text


async def test_queue_many_enqueues_in_order_with_ids(store: PostgresStore) -> None:
    ids = await jobs_app.record.queue_many([((str(i),), {}) for i in range(50)])
    assert len(ids) == len(set(ids)) == 50
    status = await store.get_status(ids[7])
    assert status["args"]["args"] == ["7"]


async def test_queue_many_rows_are_those_queue_makes(store: PostgresStore) -> None:
    n = 200
    now = await store.pool.fetchval("SELECT now()")
    ids = await jobs_app.record.queue_many([((str(i),), {}) for i in range(n)])
    later = await jobs_app.record.options(delay=60, priority=3).queue_many(
        [((f"later-{i}",), {}) for i in range(n)]
    )
    flows = await workflows_app.approval.options(timeout=120).queue_many(
        [((f"order-{i}",), {}) for i in range(n)]
    )
    assert len(set(ids + later + flows)) == 3 * n
    rows = {
        str(r["id"]): r
        for r in await store.pool.fetch(
            "SELECT id, kind, queue, priority, args, status, max_retries, timeout_seconds, "
            "extract(epoch FROM run_at - created_at) AS delay, "
            "extract(epoch FROM deadline - created_at) AS ttl, created_at "
            "FROM workflows.executions"
        )
    }
    for i, execution_id in enumerate(ids):
        row = rows[execution_id]
        assert json.loads(row["args"]) == {"args": [str(i)], "kwargs": {}}
        assert (row["kind"], row["queue"], row["status"]) == ("job", "work", "pending")
        assert row["delay"] == 0 and row["ttl"] is None
        assert row["max_retries"] == 0 and row["timeout_seconds"] == 300
        assert row["created_at"] >= now
    for i, execution_id in enumerate(later):
        row = rows[execution_id]
        assert json.loads(row["args"])["args"] == [f"later-{i}"]
        assert row["delay"] == 60 and row["priority"] == 3
    for execution_id in flows:
        row = rows[execution_id]
        assert (row["kind"], row["queue"]) == ("workflow", "orders")
        assert row["ttl"] == 120 and row["timeout_seconds"] is None


async def test_queue_many_announces_its_queue(store: PostgresStore) -> None:
    n = 300
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(store.dsn)
    try:
        await listener.add_listener(
            "workflows_work", lambda _c, _p, _ch, payload: heard.put_nowait(payload)
        )
        ids = await jobs_app.record.queue_many([((f"bulk-{i}",), {}) for i in range(n)])
        assert len(ids) == n
        assert await asyncio.wait_for(heard.get(), 10) == "work"
    finally:
        await listener.close()


async def test_unmigrated_database_says_run_migrate(empty_database_url: str) -> None:
    with pytest.raises(SchemaNotReadyError, match="run `workflows migrate`"):
        await jobs_app.record.queue("x")
    with pytest.raises(SchemaNotReadyError, match="run `workflows migrate`"):
        jobs_app.record.queue_sync("x")


def test_decorators_reject_bad_definitions() -> None:
    with pytest.raises(ConfigurationError, match="async def"):
        workflows.workflow(queue="q")(lambda: None)

    def outer() -> Function[..., object]:
        @workflows.job(queue="q")
        async def nested() -> None: ...

        return nested

    with pytest.raises(ConfigurationError, match="module-level"):
        outer()


async def test_execution_ids_are_time_ordered_uuids(store: PostgresStore) -> None:
    # Version 7: the first 48 bits are the creation time in Unix milliseconds, so a backlog's
    # oldest rows (claimed first) sit together in the primary key.
    before = await store.pool.fetchval("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)")
    ids = [await jobs_app.record.queue("one")]
    ids += await jobs_app.record.queue_many([((str(i),), {}) for i in range(20)])
    after = await store.pool.fetchval("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)")
    for execution_id in ids:
        value = uuid.UUID(execution_id)
        assert (value.version, value.variant) == (7, uuid.RFC_4122)
        assert before <= value.int >> 80 <= after
