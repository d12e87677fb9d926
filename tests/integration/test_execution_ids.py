"""The ids `.queue()` returns (typed ExecutionId) are the plain str at run time: both drivers,
JSON, the API and the CLI take them as before."""

from __future__ import annotations

import asyncio
import json

import psycopg
from click.testing import CliRunner

import workflows
from tests.integration import jobs_app, workflows_app
from tests.integration.conftest import StartWorker
from workflows_cli.main import cli
from workflows_postgres.store import PostgresStore


async def test_an_async_enqueued_id_goes_wherever_a_plain_id_goes(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.record.queue("first")
    assert type(job_id) is str
    # asyncpg, as the parameter of a query of the user's own (a uuid and a text).
    stored = await store.pool.fetchval(
        "SELECT id::text FROM workflows.executions WHERE id = $1 AND id::text = $2", job_id, job_id
    )
    assert stored == job_id and hash(stored) == hash(job_id)
    # JSON: an argument, an entry of queue_many, a signal's payload.
    batch = await jobs_app.record.queue_many([((job_id,), {}), (("second",), {})])
    assert [type(i) for i in batch] == [str, str]
    assert (await workflows.get_status(batch[0]))["args"] == {"args": [stored], "kwargs": {}}
    flow_id = await workflows_app.collect_signals.queue(1)
    await start_worker("work", "orders")
    await workflows.send_signal(flow_id, "item", {"job": job_id})
    assert await workflows.get_result(job_id, timeout=20) == "first"
    assert await workflows.get_result(batch[0], timeout=20) == stored
    assert await workflows.get_result(flow_id, timeout=20) == [{"job": stored}]
    assert await workflows.get_result(batch[1], timeout=20) == "second"
    assert await workflows.cancel(batch[1]) == "already completed"


async def test_a_sync_enqueued_id_goes_through_psycopg_and_the_cli(
    database_url: str, store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await asyncio.to_thread(jobs_app.record.queue_sync, "sync")
    assert type(job_id) is str
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT id::text FROM workflows.executions WHERE id = %s AND id::text = %s",
            (job_id, job_id),
        ).fetchone()
    assert row == (job_id,)
    await start_worker("work")
    assert await asyncio.to_thread(workflows.get_result_sync, job_id, 20) == "sync"
    # In this thread: the worker sharing the loop stays still, and prints nothing meanwhile.
    shown = CliRunner().invoke(cli, ["status", job_id, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == job_id
