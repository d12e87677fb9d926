"""Logs and metrics as an operator reads them: a worker process's JSON lines, the embedded
database's notice, and the queue gauges scraped over HTTP from a worker on a real database."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import StartWorker, until, wait_status
from tests.integration.jobs_app import always_fails, flaky, record
from tests.integration.logs_app import greet, greet_in_a_thread
from workflows import queues, rate_limits
from workflows_postgres import embedded
from workflows_postgres.store import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NOTICE = "using the embedded PostgreSQL in"


# ---- logs ------------------------------------------------------------------------------------


async def test_a_worker_process_logs_one_json_object_per_line_with_each_executions_fields(
    store: PostgresStore, database_url: str
) -> None:
    retried = await flaky.queue("json", 1)
    failed = await always_fails.queue("json")
    greeted = [await greet.queue("async"), await greet_in_a_thread.queue("sync")]
    worker = subprocess.Popen(
        [str(BIN / "currant"), "worker", "-q", "work", "--log-format", "json"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await wait_status(store, retried, {"completed"})
        await wait_status(store, failed, {"failed"})
        for execution_id in greeted:
            await wait_status(store, execution_id, {"completed"})
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(worker.communicate, timeout=40)
    assert worker.returncode == 0, err
    assert out == ""

    records = [json.loads(line) for line in err.splitlines()]
    for r in records:
        assert {"timestamp", "level", "logger", "message"} <= r.keys(), r
        assert datetime.fromisoformat(r["timestamp"]).utcoffset().total_seconds() == 0
        assert r["logger"].split(".")[0] in {"workflows_worker", "workflows_postgres", "logs_app"}
    worker_ids = {r["worker_id"] for r in records if r["logger"].startswith("workflows_worker")}
    assert len(worker_ids) == 1, "every record of the worker names it"
    (worker_id,) = worker_ids
    serving = [r for r in records if r["message"].startswith(f"worker {worker_id[:8]} serving")]
    assert len(serving) == 1 and "execution_id" not in serving[0]

    def about(execution_id: str) -> list[dict[str, Any]]:
        return [r for r in records if r.get("execution_id") == execution_id]

    flaky_name = (await store.get_status(retried))["name"]
    assert [(r["message"].split()[0], r["attempt"]) for r in about(retried)] == [
        ("started", 1),
        ("failed", 1),
        ("started", 2),
        ("completed", 2),
    ]
    for r in about(retried):
        assert (r["kind"], r["name"], r["queue"], r["worker_id"]) == (
            "job",
            flaky_name,
            "work",
            worker_id,
        )
        assert r["logger"] == "workflows_worker.executor"
    ended = [r for r in about(retried) if not r["message"].startswith("started")]
    assert all(isinstance(r["duration"], float) and r["duration"] >= 0 for r in ended)
    final = about(failed)[-1]
    assert final["message"].startswith(f"failed job {final['name']} id={failed} after 2 attempts")
    assert (final["attempt"], final["level"]) == (2, "INFO")
    # The code's own records, on the event loop or a thread of the pool, name its execution.
    for execution_id, who in zip(greeted, ("async", "sync"), strict=True):
        (hello,) = [r for r in about(execution_id) if r["logger"] == "logs_app"]
        assert hello["message"] == f"hello {who}"
        assert (hello["attempt"], hello["worker_id"]) == (1, worker_id)


def test_a_bad_log_format_from_the_environment_is_one_line_and_exit_1(database_url: str) -> None:
    env = {**os.environ, "WORKFLOWS_LOG_FORMAT": "yaml"}
    result = subprocess.run(
        [str(BIN / "currant"), "worker", "-q", "work"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == "error: WORKFLOWS_LOG_FORMAT='yaml': must be one of text, json\n"


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    # As in test_provisioning: a folder the server's user (postgres, under root) can enter.
    tmp = Path(tempfile.mkdtemp(prefix="workflows-embedded-"))
    tmp.chmod(0o755)
    data_dir = tmp / "pgdata"
    try:
        yield data_dir
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_embedded_notice_shows_once_per_process_and_can_be_silenced(
    embedded_data_dir: Path,
) -> None:
    def attach_twice(setup: str = "", **env: str) -> str:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
        environment.update(env, WORKFLOWS_DATA_DIR=str(embedded_data_dir))
        return subprocess.run(
            [
                sys.executable,
                "-c",
                f"import logging; {setup}\n"
                "from workflows_postgres import embedded\n"
                "embedded.ensure_running(); embedded.ensure_running()",
            ],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stderr

    # A new user, no logging set up at all: seen, once.
    shown = attach_twice()
    assert shown.count(NOTICE) == 1, shown
    assert str(embedded_data_dir.resolve()) in shown
    assert attach_twice(WORKFLOWS_QUIET_EMBEDDED="1") == ""
    assert attach_twice("logging.basicConfig(level=logging.ERROR)") == ""
    # A record like any other: an application's format shows its logger.
    formatted = attach_twice("logging.basicConfig(format='%(name)s %(levelname)s')")
    assert formatted == "workflows_postgres.embedded WARNING\n"


# ---- metrics ---------------------------------------------------------------------------------


def _scrape(port: int) -> dict[str, list[Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "_created" not in text
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def _gauge(families: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    values = [s.value for s in families.get(name, []) if s.labels == labels]
    return values[0] if values else None


async def test_oldest_pending_age_and_depth_past_the_exact_limit_are_scraped(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 5
    monkeypatch.setenv("WORKFLOWS_WORKER_QUEUE_DEPTH_EXACT_LIMIT", str(limit))
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.3")
    # A paused queue keeps its backlog pending and runnable, as one nobody serves would.
    await queues.pause("work")
    backlog = [await record.queue(f"b{i}") for i in range(20)]
    few = [await record.options(queue="few").queue(f"f{i}") for i in range(2)]
    later = await record.options(queue="later", delay=3600).queue("later")
    await store.pool.execute(
        "UPDATE workflows.executions SET run_at = now() - interval '1 hour' WHERE id = $1",
        backlog[7],
    )
    # The planner's estimate reads the statistics ANALYZE keeps (autovacuum's, in production).
    await store.pool.execute("ANALYZE workflows.executions")
    await queues.pause("few")

    worker = await start_worker("work", "few", "later", "idle", metrics_port=0)
    assert worker._server is not None
    port = worker._server.port

    def sampled() -> dict[str, list[Any]] | None:
        families = _scrape(port)
        age = _gauge(families, "workflows_queue_oldest_pending_age_seconds", queue="work")
        return families if age else None

    families = await until(sampled, "the gauges sampled with the backlog")

    age = "workflows_queue_oldest_pending_age_seconds"
    assert 3600 <= _gauge(families, age, queue="work") < 3600 + 60
    assert 0 < _gauge(families, age, queue="few") < 60
    # Due in an hour: nothing runnable yet, so no age.
    assert _gauge(families, age, queue="later") == 0
    assert _gauge(families, age, queue="idle") == 0
    depth, estimated = "workflows_queue_depth", "workflows_queue_depth_estimated"
    # Past the limit the count would stop at 5: the planner's estimate says about 20.
    work_depth = _gauge(families, depth, queue="work", status="pending")
    assert work_depth is not None and limit < work_depth <= 2 * len(backlog)
    assert _gauge(families, estimated, queue="work", status="pending") == 1
    assert _gauge(families, estimated, queue="work", status="throttled") == 1
    assert (_gauge(families, depth, queue="work", status="throttled") or 0) > limit
    # Below the limit: counted exactly, and marked so.
    assert _gauge(families, depth, queue="few", status="pending") == len(few)
    assert _gauge(families, estimated, queue="few", status="pending") == 0
    assert _gauge(families, depth, queue="later", status="pending") == 1
    (build,) = families["workflows_build_info"]
    assert build.value == 1 and build.labels["version"]

    # Served, the queue drains: the age falls back to 0 and the depth is counted again.
    await queues.resume("work")
    for execution_id in backlog:
        await wait_status(store, execution_id, {"completed"})

    def drained() -> bool:
        families = _scrape(port)
        return (
            _gauge(families, age, queue="work") == 0
            and _gauge(families, depth, queue="work", status="pending") == 0
            and _gauge(families, estimated, queue="work", status="pending") == 0
        )

    await until(drained, "the gauges to show the drained queue")
    assert (await store.get_status(later))["status"] == "pending"


async def test_the_oldest_age_reads_a_few_index_pages_of_a_deep_backlog(
    store: PostgresStore,
) -> None:
    # 100,000 pending in three priorities; the oldest in the lowest priority, where a scan in
    # claim order (priority first) would reach it last.
    await store.pool.execute(
        "INSERT INTO workflows.executions (id, kind, name, queue, priority, args, max_retries, "
        "run_at) SELECT gen_random_uuid(), 'job', 'm:f', 'deep', g % 3, '{}', 0, "
        "now() - make_interval(secs => g % 600) FROM generate_series(1, 100000) g"
    )
    await store.pool.execute(
        "UPDATE workflows.executions SET run_at = now() - interval '2 hours' WHERE id = "
        "(SELECT id FROM workflows.executions WHERE priority = 0 ORDER BY run_at DESC LIMIT 1)"
    )
    await store.pool.execute("ANALYZE workflows.executions")
    sql = store.sql("queue_oldest_pending_age")

    (row,) = await store.control("queue_oldest_pending_age", [["deep"], 1000])
    async with store.pool.acquire() as conn:
        plan = json.loads(
            await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, ["deep"], 1000)
        )[0]

    assert 7200 <= row["age"] < 7200 + 60
    text = json.dumps(plan)
    assert "executions_claim" in text and "Seq Scan" not in text, text
    top = plan["Plan"]
    pages = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    # One descent of the index per priority (and one to find there is none below): tens of
    # pages, where the backlog's index alone spans hundreds.
    assert pages < 100, pages


async def test_throttled_depth_counts_only_the_executions_of_a_spent_rate_key(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.3")
    await rate_limits.set("api:slow", "1/h")
    keyed = [
        await record.options(queue="rated", rate_key="api:slow").queue(f"k{i}") for i in range(4)
    ]
    free = [await record.options(queue="rated").queue(f"f{i}") for i in range(3)]
    worker = await start_worker("rated", metrics_port=0)
    assert worker._server is not None
    port = worker._server.port
    for execution_id in free:
        await wait_status(store, execution_id, {"completed"})

    def settled() -> dict[str, list[Any]] | None:
        families = _scrape(port)
        throttled = _gauge(families, "workflows_queue_depth", queue="rated", status="throttled")
        return families if throttled == 3 else None

    # The key's one start an hour went to one of its executions; the other three wait for it.
    families = await until(settled, "the rate key's three executions counted as throttled")
    assert _gauge(families, "workflows_queue_depth", queue="rated", status="pending") == 3
    assert (
        _gauge(families, "workflows_queue_depth_estimated", queue="rated", status="throttled") == 0
    )
    statuses = [(await store.get_status(i))["status"] for i in keyed]
    assert sorted(statuses) == ["completed", "pending", "pending", "pending"]


async def test_depths_of_a_deep_backlog_read_no_more_than_their_limit(store: PostgresStore) -> None:
    # No rate key spent, queue not stopped: nothing is throttled, and finding that out must not
    # walk the backlog (it read every pending row of the queue, every sample, before 0012).
    await store.pool.execute(
        "INSERT INTO workflows.executions (id, kind, name, queue, priority, args, max_retries, "
        "run_at) SELECT gen_random_uuid(), 'job', 'm:f', 'deep', g % 3, '{}', 0, "
        "now() - make_interval(secs => g % 600) FROM generate_series(1, 50000) g"
    )
    await store.pool.execute("VACUUM ANALYZE workflows.executions")
    limit = 100

    depths = await store.queue_depths(["deep"], limit)
    async with store.pool.acquire() as conn:
        plan = json.loads(
            await conn.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + store.sql("queue_depths"),
                ["deep"],
                limit,
            )
        )[0]

    assert depths[("deep", "pending")] == limit
    assert depths[("deep", "throttled")] == 0
    top = plan["Plan"]
    pages = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    # About a hundred pages for the hundred counted; the walk was ~50,000 (a page per row).
    assert pages < 500, pages
