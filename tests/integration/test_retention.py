"""Retention against a real PostgreSQL and real workers: pruning finished trees (whole, never
what still runs), per-status retention, dry runs, the CLI, the maintenance leader's own
pruning, and idempotency keys with a window."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from tests.integration.conftest import StartWorker, until, wait_status
from workflows import (
    ConfigurationError,
    ExecutionNotFoundError,
    activity,
    job,
    prune,
    prune_sync,
    send_signal,
    wait_for_signal,
    workflow,
)
from workflows.store import EnqueueRequest
from workflows_cli.main import cli
from workflows_postgres.store import PostgresStore

QUEUE = "retention"
IDLE = "retention_idle"  # no worker listens: what is enqueued there stays pending
ALL = ("completed", "failed", "cancelled")

ran: dict[str, int] = {}
gate = asyncio.Event()


@activity(queue=QUEUE)
async def add_one(x: int) -> int:
    return x + 1


@workflow(queue=QUEUE)
async def leaf(x: int) -> int:
    return await add_one.run(x)


@workflow(queue=QUEUE)
async def tree(x: int) -> int:
    a = await add_one.run(x)
    b = await leaf.run(a)
    got = await wait_for_signal("go", timeout=600)
    return int(b + got["n"])


@job(queue=QUEUE, retries=0)
async def counted(key: str) -> str:
    ran[key] = ran.get(key, 0) + 1
    return key


@job(queue=QUEUE, retries=0)
async def broken() -> None:
    raise RuntimeError("on purpose")


@job(queue=QUEUE, retries=0, timeout=120)
async def held() -> None:
    await gate.wait()


@job(queue=IDLE)
async def idle(n: int) -> int:
    return n


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def age(db: psycopg.Connection[dict[str, Any]], ids: list[str], days: float) -> None:
    """Make finished rows (and everything under them) look ``days`` old."""
    db.execute(
        "WITH RECURSIVE t AS (SELECT id FROM workflows.executions WHERE id = ANY(%s::uuid[]) "
        "UNION ALL SELECT c.id FROM workflows.executions c JOIN t ON c.parent_id = t.id) "
        "UPDATE workflows.executions e SET finished_at = now() - make_interval(days => %s), "
        "created_at = now() - make_interval(days => %s + 1) "
        "FROM t WHERE e.id = t.id AND e.finished_at IS NOT NULL",
        (ids, days, days),
    )


def tree_ids(db: psycopg.Connection[dict[str, Any]], root: str) -> list[str]:
    rows = db.execute(
        "WITH RECURSIVE t AS (SELECT id FROM workflows.executions WHERE id = %s::uuid "
        "UNION ALL SELECT c.id FROM workflows.executions c JOIN t ON c.parent_id = t.id) "
        "SELECT id::text AS id FROM t",
        (root,),
    ).fetchall()
    return [r["id"] for r in rows]


def counts(db: psycopg.Connection[dict[str, Any]]) -> dict[str, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM workflows.executions) AS executions, "
        "(SELECT count(*) FROM workflows.workflow_steps) AS steps, "
        "(SELECT count(*) FROM workflows.workflow_signals) AS signals"
    ).fetchone()
    assert row is not None
    return dict(row)


def exists(db: psycopg.Connection[dict[str, Any]], ids: list[str]) -> int:
    row = db.execute(
        "SELECT count(*) AS n FROM workflows.executions WHERE id = ANY(%s::uuid[])", (ids,)
    ).fetchone()
    assert row is not None
    return int(row["n"])


async def finished_tree(store: PostgresStore, n: int) -> str:
    root = await tree.queue(n)
    await until(lambda: _waiting(store, root), "the tree to wait for its signal", timeout=30)
    await send_signal(root, "go", {"n": 1})
    done = await wait_status(store, root, {"completed"}, timeout=30)
    assert done["result"] == n + 3
    return root


async def _waiting(store: PostgresStore, root: str) -> bool:
    return (await store.get_status(root))["status"] == "waiting"


async def test_a_finished_tree_goes_whole_with_its_steps_signals_activities_and_children(
    start_worker: StartWorker, store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    await start_worker(QUEUE)
    old, young = await finished_tree(store, 1), await finished_tree(store, 10)
    old_tree, young_tree = tree_ids(db, old), tree_ids(db, young)
    # The root, its activity, its child workflow and the child's activity.
    assert len(old_tree) == 4
    age(db, [old], days=3)
    before = counts(db)

    would = await prune(older_than="2d", dry_run=True)
    assert counts(db) == before
    # Steps: the root's activity, child and signal wait; the child's activity.
    assert would == {"roots": 1, "executions": 4, "steps": 4, "signals": 1}

    assert await prune(older_than="2d") == would
    assert exists(db, old_tree) == 0
    assert exists(db, young_tree) == 4
    after = counts(db)
    assert before["executions"] - after["executions"] == 4
    assert before["steps"] - after["steps"] == 4
    assert before["signals"] - after["signals"] == 1
    # Nothing left pointing at the pruned tree.
    row = db.execute(
        "SELECT count(*) AS n FROM workflows.workflow_steps WHERE workflow_id = ANY(%s::uuid[])",
        (old_tree,),
    ).fetchone()
    assert row is not None and row["n"] == 0
    assert await prune(older_than="2d") == {"roots": 0, "executions": 0, "steps": 0, "signals": 0}


async def test_nothing_running_pending_or_waiting_is_pruned_nor_a_finished_child_of_a_live_parent(
    start_worker: StartWorker, store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    await start_worker(QUEUE)
    gate.clear()
    waiting_root = await tree.queue(5)
    await until(lambda: _waiting(store, waiting_root), "the tree to wait", timeout=30)
    running = await held.queue()
    await wait_status(store, running, {"running"})
    pending = await idle.queue(1)
    done = await counted.queue("x")
    await wait_status(store, done, {"completed"})
    # Everything looks a year old, started and finished alike.
    db.execute(
        "UPDATE workflows.executions SET created_at = now() - interval '366 days', "
        "finished_at = CASE WHEN finished_at IS NOT NULL THEN now() - interval '365 days' END"
    )
    # A workflow that ended while its activity still runs (a cancel that the activity's
    # worker has not acted on yet): finished, old, with a running child.
    ended = str(uuid.uuid4())
    db.execute(
        "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, status, "
        "finished_at) VALUES (%s, 'workflow', 'x:ended', %s, '{}', 0, 'cancelled', "
        "now() - interval '365 days')",
        (ended, IDLE),
    )
    db.execute(
        "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, status, "
        "parent_id, parent_seq) VALUES (%s, 'activity', 'x:act', %s, '{}', 0, 'running', %s, 1)",
        (str(uuid.uuid4()), IDLE, ended),
    )
    waiting_tree = tree_ids(db, waiting_root)
    finished_children = db.execute(
        "SELECT count(*) AS n FROM workflows.executions WHERE id = ANY(%s::uuid[]) "
        "AND finished_at IS NOT NULL",
        (waiting_tree,),
    ).fetchone()
    assert finished_children is not None and finished_children["n"] == 3

    pruned = await prune(older_than="1d")

    assert pruned["roots"] == 1 and pruned["executions"] == 1  # the completed job only
    assert exists(db, [done]) == 0
    assert exists(db, waiting_tree) == len(waiting_tree)
    assert exists(db, [running, pending]) == 2
    assert exists(db, tree_ids(db, ended)) == 2
    gate.set()
    await wait_status(store, running, {"completed"})
    await send_signal(waiting_root, "go", {"n": 0})
    await wait_status(store, waiting_root, {"completed"})


async def test_pruning_under_a_steady_load_never_loses_a_job_nor_its_run(
    start_worker: StartWorker, store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    await start_worker(QUEUE, concurrency=8)
    ran.clear()
    keys = [f"k{i}" for i in range(300)]
    ids: list[str] = []
    stop = asyncio.Event()
    pruned_total = 0

    async def pruner() -> None:
        nonlocal pruned_total
        while not stop.is_set():
            pruned_total += (await prune(older_than=0.05))["executions"]
            await asyncio.sleep(0.01)

    task = asyncio.create_task(pruner())
    for i in range(0, len(keys), 10):
        for key in keys[i : i + 10]:
            ids.append(await counted.queue(key))
        await asyncio.sleep(0.01)
    await until(lambda: len(ran) == len(keys), "every job to run", timeout=60)
    stop.set()
    await task
    # Each ran exactly once: none pruned while pending (it would never have run) or while
    # running (its outcome would have nowhere to go, and a retry would run it again).
    assert ran == {k: 1 for k in keys}
    assert pruned_total > 0
    # What is left has finished, and a final prune takes the rest.
    left = db.execute(
        "SELECT count(*) AS n FROM workflows.executions WHERE id = ANY(%s::uuid[]) "
        "AND status <> 'completed'",
        (ids,),
    ).fetchone()
    assert left is not None and left["n"] == 0

    async def all_pruned() -> bool:
        await prune(older_than=0.05)
        return exists(db, ids) == 0

    await until(all_pruned, "the last rows to age and go")


async def test_each_status_is_kept_for_its_own_retention(
    start_worker: StartWorker,
    store: PostgresStore,
    db: psycopg.Connection[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLOWS_RETENTION", "2d")
    monkeypatch.setenv("WORKFLOWS_RETENTION_CANCELLED", "forever")
    await start_worker(QUEUE)
    ok = await counted.queue("ok")
    bad = await broken.queue()
    gone = await idle.queue(2)
    await store.cancel(gone)
    await wait_status(store, ok, {"completed"})
    await wait_status(store, bad, {"failed"})
    await wait_status(store, gone, {"cancelled"})
    age(db, [ok, bad, gone], days=3)

    # Completed after 2 days; failed after its default 30; cancelled never.
    assert (await prune())["executions"] == 1
    assert exists(db, [ok]) == 0 and exists(db, [bad, gone]) == 2
    age(db, [bad, gone], days=31)
    assert prune_sync() == {"roots": 1, "executions": 1, "steps": 0, "signals": 0}
    assert exists(db, [bad]) == 0 and exists(db, [gone]) == 1
    # Only the statuses chosen, at the age given.
    age(db, [gone], days=400)
    assert prune_sync(older_than="1d", statuses=["completed", "failed"])["executions"] == 0
    assert prune_sync(older_than="1d", statuses=["cancelled"])["executions"] == 1


async def test_prune_on_the_command_line_counts_and_deletes(
    start_worker: StartWorker, store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    await start_worker(QUEUE)
    ok = await counted.queue("cli")
    bad = await broken.queue()
    await wait_status(store, ok, {"completed"})
    await wait_status(store, bad, {"failed"})
    age(db, [ok, bad], days=10)
    runner = CliRunner()

    dry = runner.invoke(cli, ["prune", "--older-than", "7d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.strip() == "would delete 2 executions (2 trees), 0 steps, 0 signals"
    assert exists(db, [ok, bad]) == 2

    only = runner.invoke(cli, ["prune", "--older-than", "7d", "--status", "failed", "--json"])
    assert only.exit_code == 0, only.output
    assert json.loads(only.output) == {
        "roots": 1,
        "executions": 1,
        "steps": 0,
        "signals": 0,
        "dry_run": False,
    }
    assert exists(db, [ok]) == 1 and exists(db, [bad]) == 0

    # Without --older-than: the configured retention (7 days for completed).
    rest = runner.invoke(cli, ["prune"])
    assert rest.exit_code == 0, rest.output
    assert rest.output.strip() == "deleted 1 executions (1 trees), 0 steps, 0 signals"

    wrong = runner.invoke(cli, ["prune", "--older-than", "a week"])
    assert wrong.exit_code != 0
    assert "older_than: 'a week' is not a duration" in wrong.output
    assert "Traceback" not in wrong.output
    refused = runner.invoke(cli, ["prune", "--status", "running"])
    assert refused.exit_code == 2 and "running" in refused.output


async def test_the_maintenance_leader_prunes_on_its_own(
    start_worker: StartWorker,
    store: PostgresStore,
    db: psycopg.Connection[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLOWS_RETENTION", "1s")
    monkeypatch.setenv("WORKFLOWS_RETENTION_FAILED", "1s")
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT", "2")
    await start_worker(QUEUE)
    root = await finished_tree(store, 3)
    whole = tree_ids(db, root)
    bad = await broken.queue()
    waiting = await idle.queue(7)
    db.execute(
        "UPDATE workflows.executions SET created_at = now() - interval '1 day' WHERE id = %s",
        (waiting,),
    )
    await wait_status(store, bad, {"failed"})

    await until(lambda: exists(db, [*whole, bad]) == 0, "the leader to prune", timeout=30)
    with pytest.raises(ExecutionNotFoundError):
        await store.get_status(root)
    assert (await store.get_status(waiting))["status"] == "pending"


async def test_an_idempotency_key_within_its_window_returns_the_first_execution(
    start_worker: StartWorker, store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    await start_worker(QUEUE)
    first = await counted.options(idempotency_key="order-1", idempotency_ttl="1h").queue("a")
    await wait_status(store, first, {"completed"})
    row = db.execute(
        "SELECT idempotency_expires_at - created_at AS window FROM workflows.executions "
        "WHERE id = %s",
        (first,),
    ).fetchone()
    assert row is not None and row["window"].total_seconds() == 3600
    # Finished or not, within the window the key gives back the first execution.
    again = await counted.options(idempotency_key="order-1", idempotency_ttl="1h").queue("b")
    assert again == first
    assert counted.options(idempotency_key="order-1").queue_sync("c") == first


async def test_after_its_window_a_key_moves_to_one_new_execution_however_many_race(
    start_worker: StartWorker, store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    first = await idle.options(idempotency_key="k", idempotency_ttl=60).queue(1)
    # The window passed (moved back rather than waited for).
    db.execute(
        "UPDATE workflows.executions SET created_at = now() - interval '61 seconds', "
        "idempotency_expires_at = now() - interval '1 second' WHERE id = %s",
        (first,),
    )
    stores = [await PostgresStore.connect(store.settings) for _ in range(8)]
    try:
        request = EnqueueRequest(
            kind="job",
            name=idle.path,
            queue=IDLE,
            args='{"args": [2], "kwargs": {}}',
            priority=0,
            max_retries=0,
            timeout=60.0,
            idempotency_key="k",
            idempotency_ttl=60.0,
        )
        got = await asyncio.gather(*(s.enqueue(request) for s in stores))
    finally:
        for s in stores:
            await s.close()
    assert len(set(got)) == 1 and got[0] != first
    rows = db.execute(
        "SELECT id::text AS id, status, idempotency_key FROM workflows.executions "
        "WHERE name = %s ORDER BY created_at",
        (idle.path,),
    ).fetchall()
    # The old row is still there, as it was, without the key; the new one holds it.
    assert rows == [
        {"id": first, "status": "pending", "idempotency_key": None},
        {"id": got[0], "status": "pending", "idempotency_key": "k"},
    ]
    # A key without a window never moves.
    forever = await idle.options(idempotency_key="kept").queue(3)
    db.execute(
        "UPDATE workflows.executions SET created_at = now() - interval '400 days' WHERE id = %s",
        (forever,),
    )
    assert await idle.options(idempotency_key="kept", idempotency_ttl="1s").queue(4) == forever


async def test_a_pruned_execution_frees_its_idempotency_key(
    start_worker: StartWorker, store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    await start_worker(QUEUE)
    first = await counted.options(idempotency_key="once").queue("p")
    await wait_status(store, first, {"completed"})
    assert await counted.options(idempotency_key="once").queue("p") == first
    age(db, [first], days=8)
    assert (await prune())["executions"] == 1
    second = await counted.options(idempotency_key="once").queue("p")
    assert second != first
    await wait_status(store, second, {"completed"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"idempotency_ttl": "1h"}, "idempotency_ttl needs an idempotency_key"),
        ({"idempotency_key": "k", "idempotency_ttl": "soon"}, "'soon' is not a duration"),
        ({"idempotency_key": "k", "idempotency_ttl": -1}, "idempotency_ttl"),
        ({"idempotency_key": "k", "idempotency_ttl": True}, "got bool"),
    ],
)
def test_a_bad_idempotency_ttl_is_refused_before_the_database(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        idle.options(**options)


async def test_prune_walks_the_finished_index_and_deletes_through_indexes(
    store: PostgresStore, db: psycopg.Connection[dict[str, Any]]
) -> None:
    # 40,000 finished jobs and a few running: big enough that a scan would be chosen if the
    # index did not serve.
    db.execute(
        "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, status, "
        "created_at, finished_at) "
        "SELECT gen_random_uuid(), 'job', 'x:y', %s, '{}', 0, "
        "(ARRAY['completed', 'failed', 'cancelled', 'running'])[1 + i %% 4], "
        "now() - make_interval(days => i %% 60), "
        "CASE WHEN i %% 4 <> 3 THEN now() - make_interval(days => i %% 60) END "
        "FROM generate_series(1, 40000) AS i",
        (IDLE,),
    )
    db.execute("ANALYZE workflows.executions")
    db.execute("ANALYZE workflows.workflow_signals")
    plan = "\n".join(
        r["QUERY PLAN"]
        for r in db.execute(
            "EXPLAIN SELECT e.id FROM workflows.executions e "
            "WHERE e.status = 'completed' AND e.finished_at < now() - interval '7 days' "
            "AND e.parent_id IS NULL AND workflows.tree_finished(e.id) "
            "ORDER BY e.finished_at LIMIT 1000 FOR UPDATE SKIP LOCKED"
        ).fetchall()
    )
    assert "executions_finished" in plan, plan
    assert "Sort" not in plan, plan
    # Empty tables are read whole whatever the indexes: whether one serves the cascade's
    # lookups is what counts here.
    db.execute("SET enable_seqscan = off")
    for table, index in (
        ("workflow_signals", "workflow_signals_workflow"),
        ("workflow_steps", "workflow_steps_pkey"),
    ):
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in db.execute(
                f"EXPLAIN DELETE FROM workflows.{table} WHERE workflow_id = %s::uuid",
                (str(uuid.uuid4()),),
            ).fetchall()
        )
        assert index in plan, plan
    db.execute("RESET enable_seqscan")
    row = db.execute(
        "SELECT count(*) AS n FROM workflows.executions "
        "WHERE finished_at < now() - interval '7 days'"
    ).fetchone()
    assert row is not None
    pruned = await prune(older_than="7d")
    assert pruned["roots"] == pruned["executions"] == row["n"] > 20000
    assert exists(db, []) == 0
    left = db.execute(
        "SELECT count(*) FILTER (WHERE status = 'running') AS running, "
        "count(*) FILTER (WHERE finished_at < now() - interval '7 days') AS old "
        "FROM workflows.executions"
    ).fetchone()
    assert left == {"running": 10000, "old": 0}
