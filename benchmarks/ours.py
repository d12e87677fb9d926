"""This project (currant): the benchmark's jobs and workflow, its client side and its worker."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    NAP_SECONDS,
    QUEUE,
    System,
    install_stop_handlers,
    mark_first,
    mark_latency,
    ready_then_wait_for_go,
)
from workflows import activity, job, workflow

SCHEMA = "workflows"


@job(queue=QUEUE)
async def noop(x: float) -> None:
    mark_first()


@job(queue=QUEUE)
async def ping(enqueued_at: float) -> None:
    mark_latency(enqueued_at)


@job(queue=QUEUE)
async def nap(x: float) -> None:
    mark_first()
    await asyncio.sleep(NAP_SECONDS)


@job(queue=QUEUE, concurrency_key=lambda x, key: key)
async def noop_keyed(x: float, key: str) -> None:
    """A no-op on a concurrency key of limit 1 (the key computed at enqueue)."""
    mark_first()


@activity(queue=QUEUE)
async def step(i: int) -> int:
    return i


@workflow(queue=QUEUE)
async def flow(n: int) -> int:
    mark_first()
    for i in range(n):
        await step.run(i)
    return n


TASKS: dict[str, Any] = {"noop": noop, "ping": ping, "nap": nap}
_FINAL = "('completed', 'failed', 'cancelled')"


class Ours(System):
    name = "ours"
    has_workflows = True

    def __init__(self, dsn: str, options: dict[str, Any]) -> None:
        super().__init__(dsn, options)
        self.store: Any = None

    async def setup(self) -> None:
        from workflows_postgres.migrate import apply_migrations

        await asyncio.to_thread(apply_migrations, self.dsn, SCHEMA)

    async def open(self) -> None:
        await super().open()
        # The public API reads its database from the environment, like an application's.
        os.environ["WORKFLOWS_DATABASE_URL"] = self.dsn
        os.environ["WORKFLOWS_SCHEMA"] = SCHEMA

    async def close(self) -> None:
        from workflows_postgres.client import reset_async, reset_sync

        await reset_async()
        reset_sync()
        if self.store is not None:
            await self.store.close()
        await super().close()

    async def enqueue(self, task: str, arg: float) -> None:
        await TASKS[task].queue(arg)

    def enqueue_sync(self, task: str, arg: float) -> None:
        TASKS[task].queue_sync(arg)

    async def enqueue_many(self, task: str, args: list[float]) -> None:
        await TASKS[task].queue_many([((a,), {}) for a in args])

    async def start_workflow(self, steps: int) -> str:
        workflow_id: str = await flow.queue(steps)
        return workflow_id

    async def preload_workflows(self, steps: int, n: int) -> None:
        await flow.queue_many([((steps,), {}) for _ in range(n)])

    async def enqueue_ids(self, task: str, n: int) -> list[str]:
        ids: list[str] = await TASKS[task].queue_many([((float(i),), {}) for i in range(n)])
        return ids

    async def wait_result(self, execution_id: str, timeout: float) -> Any:
        import workflows

        return await workflows.get_result(execution_id, timeout=timeout)

    async def waiters_settled(self, n: int, timeout: float = 60) -> None:
        """Until ``n`` waiters sleep: each registered with the store's results watcher (code
        before it had none: there each waiter held a pooled connection, or waited for one)."""
        from workflows_postgres.client import async_store

        store = await async_store().get()
        watcher = getattr(store, "results", None)
        if watcher is None:
            await asyncio.sleep(2.0)
            return
        deadline = time.monotonic() + timeout
        while watcher.waiting < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{watcher.waiting} of {n} waiters registered in {timeout} s")
            await asyncio.sleep(0.05)

    async def remaining(self) -> int:
        n: int = await self.conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.executions WHERE kind <> 'activity' "
            f"AND status NOT IN {_FINAL}"
        )
        return n

    async def failures(self) -> int:
        n: int = await self.conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.executions WHERE status IN ('failed', 'cancelled')"
        )
        return n

    async def workflow_finished_at(self, workflow_id: str) -> float | None:
        row = await self.conn.fetchrow(
            f"SELECT status, extract(epoch FROM finished_at)::float8 AS at "
            f"FROM {SCHEMA}.executions WHERE id = $1::uuid",
            workflow_id,
        )
        if row["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"workflow {workflow_id} {row['status']}")
        return float(row["at"]) if row["status"] == "completed" else None

    async def workflow_started_at(self, workflow_id: str) -> float | None:
        at = await self.conn.fetchval(
            f"SELECT extract(epoch FROM started_at)::float8 FROM {SCHEMA}.executions "
            "WHERE id = $1::uuid",
            workflow_id,
        )
        return None if at is None else float(at)

    async def limit_queue(self, concurrency: int | None = None, rate: str | None = None) -> None:
        from workflows import queues

        await queues.set_limit(QUEUE, concurrency=concurrency, rate=rate)

    async def preload_keyed(self, n: int, keys: int) -> None:
        for start in range(0, n, self.bulk_chunk):
            await noop_keyed.queue_many(
                [
                    ((float(i), f"k{i % keys}"), {})
                    for i in range(start, min(n, start + self.bulk_chunk))
                ]
            )

    async def start_times_us(self) -> list[int]:
        rows = await self.conn.fetch(
            f"SELECT (extract(epoch FROM started_at) * 1000000)::bigint AS at "
            f"FROM {SCHEMA}.executions WHERE started_at IS NOT NULL ORDER BY started_at"
        )
        return [int(r["at"]) for r in rows]

    def memory_argv(self, concurrency: int) -> tuple[list[str], bool]:
        # What users run: the `currant` command, not the embedded worker.
        currant = Path(sys.executable).with_name("currant")
        argv = [
            str(currant),
            "worker",
            "-q",
            QUEUE,
            "-c",
            str(concurrency),
            "--burst",
            "--log-level",
            "WARNING",
        ]
        return argv, False

    def worker_env(self) -> dict[str, str]:
        return {"WORKFLOWS_DATABASE_URL": self.dsn, "WORKFLOWS_SCHEMA": SCHEMA}

    async def claim_load(self, n: int, blocked: int = 0) -> None:
        from workflows.config import Settings
        from workflows_postgres.store import PostgresStore

        if blocked:
            # A key whose one slot is taken by a running execution, then `blocked` pending
            # executions of the key (held): older and of a higher priority than the claimable
            # rows, so a claim that walked them would meet them first.
            await self.conn.execute(
                f"""
                INSERT INTO {SCHEMA}.executions
                    (id, kind, name, queue, args, max_retries, timeout_seconds, status,
                     worker_id, lease, attempts, started_at, concurrency_key)
                VALUES ({SCHEMA}.new_id(), 'job', 'benchmarks.ours:noop', $1,
                        '{{"args": [0], "kwargs": {{}}}}'::json, 3, 300, 'running',
                        gen_random_uuid(), 1, 1, now(), 'hot')
                """,
                QUEUE,
            )
            await self.conn.execute(
                f"""
                INSERT INTO {SCHEMA}.executions
                    (id, kind, name, queue, args, max_retries, timeout_seconds, run_at,
                     priority, concurrency_key)
                SELECT {SCHEMA}.new_id(), 'job', 'benchmarks.ours:noop', $1,
                       '{{"args": [0], "kwargs": {{}}}}'::jsonb, 3, 300,
                       now() - interval '1 day' + make_interval(secs => g / 1000.0), 10, 'hot'
                FROM generate_series(1, $2) AS g
                """,
                QUEUE,
                blocked,
            )
            held = await self.conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.executions WHERE held AND status = 'pending'"
            )
            if held != blocked:
                raise RuntimeError(f"{held} of {blocked} executions of the busy key are held")
        await self.conn.execute(
            f"""
            INSERT INTO {SCHEMA}.executions
                (id, kind, name, queue, args, max_retries, timeout_seconds, run_at)
            SELECT {SCHEMA}.new_id(), 'job', 'benchmarks.ours:noop', $1,
                   '{{"args": [0], "kwargs": {{}}}}'::jsonb, 3, 300,
                   now() - make_interval(secs => ($2 - g) / 1000.0)
            FROM generate_series(1, $2) AS g
            """,
            QUEUE,
            n,
        )
        await self.conn.execute(f"VACUUM ANALYZE {SCHEMA}.executions")
        settings = Settings(database_url=self.dsn, schema=SCHEMA)
        self.store = await PostgresStore.connect(settings, dsn=self.dsn, min_size=1, max_size=2)
        self.worker_id = str(uuid.uuid4())

    async def claim_load_blocked(self, n: int, blocked: int) -> None:
        await self.claim_load(n, blocked)

    async def claim_once(self) -> int:
        claimed = await self.store.claim(self.worker_id, [QUEUE], 10, {})
        return len(claimed)

    # ---- retention (issue 13) ----------------------------------------------------------

    async def retention_load(self, n: int, chunk: int = 500_000) -> None:
        """``n`` finished roots spread over the last 60 days (90% completed, 8% failed, 2%
        cancelled); every 50th a workflow with two finished activities and their steps."""
        from benchmarks.common import trace

        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            await self.conn.execute(
                f"""
                INSERT INTO {SCHEMA}.executions
                    (id, kind, name, queue, args, max_retries, status, attempts, created_at,
                     started_at, finished_at, result)
                SELECT {SCHEMA}.new_id(),
                       CASE WHEN g % 50 = 0 THEN 'workflow' ELSE 'job' END,
                       'benchmarks.ours:noop', $1, '{{"args": [0], "kwargs": {{}}}}'::json, 3,
                       CASE WHEN g % 100 < 90 THEN 'completed'
                            WHEN g % 100 < 98 THEN 'failed' ELSE 'cancelled' END,
                       1, t - interval '2 seconds', t - interval '1 second', t, 'null'::json
                FROM generate_series($2::int, $3::int) AS g,
                     LATERAL (SELECT now() - make_interval(
                         secs => ($4::int - g)::float8 / $4::int * 60 * 86400) AS t) x
                """,
                QUEUE,
                start + 1,
                end,
                n,
            )
            trace(f"loaded {end} of {n} finished roots")
        await self.conn.execute(
            f"""
            INSERT INTO {SCHEMA}.executions
                (id, kind, name, queue, args, max_retries, status, attempts, created_at,
                 started_at, finished_at, result, parent_id, parent_seq)
            SELECT {SCHEMA}.new_id(), 'activity', 'benchmarks.ours:step', w.queue, w.args, 3,
                   w.status, 1, w.created_at, w.started_at, w.finished_at, 'null'::json,
                   w.id, k
            FROM {SCHEMA}.executions w, generate_series(1, 2) AS k
            WHERE w.kind = 'workflow'
            """
        )
        await self.conn.execute(
            f"""
            INSERT INTO {SCHEMA}.workflow_steps
                (workflow_id, seq, kind, name, status, execution_id, result, created_at,
                 resolved_at, delivered_in)
            SELECT a.parent_id, a.parent_seq, 'activity', 'benchmarks.ours:step', a.status,
                   a.id, 'null'::json, a.created_at, a.finished_at, 1
            FROM {SCHEMA}.executions a WHERE a.kind = 'activity'
            """
        )
        trace("loaded the workflows' activities and steps")
        await self.conn.execute(f"VACUUM ANALYZE {SCHEMA}.executions")
        await self.conn.execute(f"VACUUM ANALYZE {SCHEMA}.workflow_steps")

    async def retention_probe(self, n: int) -> None:
        """``n`` pending rows on a queue no worker serves, for :meth:`probe_claim` to take
        10 at a time; the probe registered as a worker so that no leader recovers them."""
        from workflows.config import Settings
        from workflows.records import Registration
        from workflows_postgres.store import PostgresStore

        await self.conn.execute(
            f"""
            INSERT INTO {SCHEMA}.executions
                (id, kind, name, queue, args, max_retries, timeout_seconds, run_at)
            SELECT {SCHEMA}.new_id(), 'job', 'benchmarks.ours:noop', 'probe',
                   '{{"args": [0], "kwargs": {{}}}}'::json, 3, 300,
                   now() - make_interval(secs => ($1 - g) / 1000.0)
            FROM generate_series(1, $1) AS g
            """,
            n,
        )
        await self.conn.execute(f"ANALYZE {SCHEMA}.executions")
        settings = Settings(database_url=self.dsn, schema=SCHEMA)
        self.store = await PostgresStore.connect(settings, dsn=self.dsn, min_size=1, max_size=2)
        self.worker_id = str(uuid.uuid4())
        await self.store.register_worker(
            self.worker_id, Registration("bench-probe", os.getpid(), ("probe",), "bench")
        )

    async def probe_claim(self) -> int:
        await self.store.pool.execute(
            f"UPDATE {SCHEMA}.worker_heartbeats SET last_heartbeat = now() "
            "WHERE worker_id = $1::uuid",
            self.worker_id,
        )
        claimed = await self.store.claim(self.worker_id, ["probe"], 10, {})
        return len(claimed)

    async def retention_stats(self, keep_seconds: float) -> dict[str, float]:
        row = await self.conn.fetchrow(
            f"""
            SELECT pg_total_relation_size('{SCHEMA}.executions')::float8 AS executions_bytes,
                   pg_total_relation_size('{SCHEMA}.workflow_steps')::float8 AS steps_bytes,
                   (SELECT n_tup_del FROM pg_stat_user_tables
                    WHERE relid = '{SCHEMA}.executions'::regclass)::float8 AS deleted,
                   (SELECT count(*) FROM {SCHEMA}.executions
                    WHERE status IN ('completed', 'failed', 'cancelled')
                      AND finished_at < now() - make_interval(secs => $1))::float8 AS eligible,
                   (SELECT count(*) FROM {SCHEMA}.executions
                    WHERE queue = $2 AND status = 'pending')::float8 AS backlog
            """,
            keep_seconds,
            QUEUE,
        )
        return dict(row)

    # ---- dashboard (issue 14) ----------------------------------------------------------

    async def dashboard_load(
        self, n: int, days: float = 7.0, chunk: int = 250_000
    ) -> dict[str, float]:
        """About ``n`` executions as ``days`` of a busy system leave them (see
        ``_DASHBOARD_ROOTS`` and ``_DASHBOARD_SEED``); the rows of each table, once loaded and
        analyzed."""
        from benchmarks.common import trace

        # Roots: one in ten a workflow with three activities (its own rows), so the bulk
        # makes 1.3 executions per root; the rest of the seed adds about 6,000.
        roots = max(1_000, round((n - 6_000) / 1.3))
        await self.conn.execute("SELECT setseed(0.14)")
        for start in range(0, roots, chunk):
            end = min(roots, start + chunk)
            await self.conn.execute(_sql(_DASHBOARD_ROOTS), start + 1, end, roots, days * 86400)
            trace(f"dashboard: {end} of {roots} roots")
        for step in _DASHBOARD_SEED:
            await self.conn.execute(_sql(step))
        trace("dashboard: workflows' activities, steps and signals; schedules; live rows")
        for table in ("executions", "workflow_steps", "workflow_signals", "worker_heartbeats"):
            await self.conn.execute(f"VACUUM ANALYZE {SCHEMA}.{table}")
        row = await self.conn.fetchrow(
            f"""
            SELECT (SELECT count(*) FROM {SCHEMA}.executions)::float8 AS executions,
                   (SELECT count(*) FROM {SCHEMA}.workflow_steps)::float8 AS steps,
                   (SELECT count(*) FROM {SCHEMA}.workflow_signals)::float8 AS signals,
                   (SELECT count(*) FROM {SCHEMA}.executions
                    WHERE status IN ('completed', 'failed')
                      AND finished_at > now() - interval '15 minutes')::float8 AS ends_15m,
                   pg_total_relation_size('{SCHEMA}.executions')::float8 / 2^20
                       AS executions_mb
            """
        )
        return dict(row)

    async def dashboard_targets(self, n: int) -> dict[str, Any]:
        """What the pages are asked about: ``n`` of each (jobs, id prefixes, idempotency
        keys), the 50-step workflows, and how many executions share the 8 hex digits the
        list shows of an id."""
        jobs = await self.conn.fetch(
            f"SELECT id::text FROM {SCHEMA}.executions TABLESAMPLE SYSTEM (5) "
            "WHERE kind = 'job' ORDER BY random() LIMIT $1",
            n,
        )
        ids = await self.conn.fetch(
            f"SELECT id::text FROM {SCHEMA}.executions TABLESAMPLE SYSTEM (5) "
            "ORDER BY random() LIMIT $1",
            n,
        )
        prefixes = []
        for r in ids:
            # The first 16 hex digits (the 48-bit time, the version, 12 random bits): one
            # execution unless two were created in the same millisecond.
            prefix, full = r["id"][:18], r["id"]
            hits = await self.conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.executions WHERE id >= $1::uuid AND id <= $2::uuid",
                prefix + "-0000-000000000000",
                prefix + "-ffff-ffffffffffff",
            )
            if hits == 1:
                prefixes.append((prefix, full))
        keys = await self.conn.fetch(
            f"SELECT idempotency_key AS key, id::text FROM {SCHEMA}.executions "
            "TABLESAMPLE SYSTEM (5) WHERE idempotency_key IS NOT NULL ORDER BY random() LIMIT $1",
            n,
        )
        big = await self.conn.fetch(
            f"SELECT e.id::text, (SELECT count(*) FROM {SCHEMA}.workflow_steps s "
            "WHERE s.workflow_id = e.id) AS steps "
            f"FROM {SCHEMA}.executions e WHERE e.name = $1 ORDER BY e.created_at",
            BIG_WORKFLOW,
        )
        shared = await self.conn.fetchval(
            f"SELECT count(*)::float8 / count(DISTINCT left(id::text, 8)) FROM {SCHEMA}.executions"
        )
        return {
            "jobs": [r["id"] for r in jobs],
            "prefixes": prefixes,
            "keys": [(r["key"], r["id"]) for r in keys],
            "workflows": [r["id"] for r in big],
            "workflow_steps": min(r["steps"] for r in big),
            "ids_per_short_id": shared,
        }

    async def dashboard_heartbeat(self) -> None:
        """The seeded workers' heartbeats renewed (no worker process runs)."""
        await self.conn.execute(f"UPDATE {SCHEMA}.worker_heartbeats SET last_heartbeat = now()")

    def dashboard_argv(self, port: int) -> list[str]:
        # What users run: the `workflows` command.
        command = Path(sys.executable).with_name("workflows")
        return [str(command), "dashboard", "--host", "127.0.0.1", "--port", str(port)]


def _sql(text: str) -> str:
    return text.replace("{s}", SCHEMA)


def _id_at(moment: str) -> str:
    """SQL for an id as new_id() makes it (0004), its 48-bit time taken from ``moment``
    rather than the clock: ids then sort with created_at, as they do in a real table."""
    return (
        "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING substring("
        f"int8send(floor(extract(epoch FROM {moment}) * 1000)::bigint) FROM 3) FROM 1 FOR 6), "
        "52, 1), 53, 1), 'hex')::uuid"
    )


BIG_WORKFLOW = "app.orders:bulk_import"
RARE_NAME = "app.reports:rebuild_index"
_JOB_QUEUES = "ARRAY['emails','emails','webhooks','default','media','reports','billing','reports']"
_JOB_NAMES = (
    "ARRAY['app.emails:send_welcome','app.emails:send_receipt','app.webhooks:deliver',"
    "'app.tasks:refresh_cache','app.media:resize_image','app.reports:daily_summary',"
    f"'app.billing:sync_invoice','{RARE_NAME}']"
)
_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/webhooks.py", line 88, in deliver\n'
    "    response = await client.post(url, json=payload, timeout=30)\n"
    '  File "/srv/venv/lib/python3.12/site-packages/httpx/_client.py", line 1905, in post\n'
    "    return await self.request(...)\n"
    "TimeoutError: the endpoint took longer than 30 s"
)

# Roots $1..$2 of $3, the oldest first, from $4 seconds ago to 20 s ago: one in ten a workflow
# (orders or billing) that ran 3 s, the rest jobs on six queues (see _JOB_QUEUES: emails and
# webhooks the busiest, one function in a thousand rows RARE_NAME); 93% completed, 5% failed
# (4 attempts, an error with a traceback), 2% cancelled; one job in ten with an idempotency key.
_DASHBOARD_ROOTS = f"""
INSERT INTO {{s}}.executions
    (id, kind, name, queue, status, args, result, error, attempts, max_retries,
     timeout_seconds, run_at, idempotency_key, version, deadline, created_at, started_at,
     finished_at, lease)
SELECT {_id_at("x.t")}, x.kind, x.name, x.queue, x.status,
       json_build_object('args', json_build_array(x.g, 'customer-' || (x.g % 50000)),
                         'kwargs', json_build_object()),
       CASE WHEN x.status = 'completed' THEN json_build_object('ok', true, 'n', x.g) END,
       CASE WHEN x.status = 'failed' THEN jsonb_build_object(
           'type', 'TimeoutError', 'message', 'the endpoint took longer than 30 s',
           'traceback', $${_TRACEBACK}$$) END,
       CASE WHEN x.status = 'failed' THEN 4 ELSE 1 END, 3,
       CASE WHEN x.kind = 'job' THEN 300 END,
       x.t,
       CASE WHEN x.kind = 'job' AND x.g % 10 = 3 THEN 'order-' || x.g END,
       CASE WHEN x.kind = 'workflow' THEN 2 END,
       CASE WHEN x.kind = 'workflow' THEN x.t + interval '1 day' END,
       x.t, x.t + make_interval(secs => 0.005 + x.r3 * 0.05),
       x.t + make_interval(secs => CASE WHEN x.kind = 'workflow' THEN 3.1 ELSE 0.06 END
                                   + x.r3 * 2),
       1
FROM (
    SELECT y.g, y.t, y.r3,
           CASE WHEN y.g % 10 = 0 THEN 'workflow' ELSE 'job' END AS kind,
           CASE WHEN y.g % 10 = 0 THEN
                    CASE WHEN y.r < 0.7 THEN 'app.orders:fulfil_order'
                         ELSE 'app.billing:monthly_invoice' END
                ELSE ({_JOB_NAMES})[y.i] END AS name,
           CASE WHEN y.g % 10 = 0 THEN CASE WHEN y.r < 0.7 THEN 'orders' ELSE 'billing' END
                ELSE ({_JOB_QUEUES})[y.i] END AS queue,
           CASE WHEN y.r2 < 0.93 THEN 'completed' WHEN y.r2 < 0.98 THEN 'failed'
                ELSE 'cancelled' END AS status
    FROM (
        SELECT g, r, r2, r3,
               now() - make_interval(secs => 20 + ($3::int - g)::float8 / $3::int
                                                  * ($4::float8 - 20)) AS t,
               CASE WHEN r < 0.20 THEN 1 WHEN r < 0.35 THEN 2 WHEN r < 0.60 THEN 3
                    WHEN r < 0.80 THEN 4 WHEN r < 0.90 THEN 5 WHEN r < 0.95 THEN 6
                    WHEN r < 0.999 THEN 7 ELSE 8 END AS i
        FROM (SELECT g, random() AS r, random() AS r2, random() AS r3
              FROM generate_series($1::int, $2::int) AS g) z
    ) y
) x
"""

# After the roots, in order (each statement reads what the ones before wrote).
_DASHBOARD_SEED = [
    # Each workflow's three activities (seq 2, 4, 6), each its own execution; a failed or
    # cancelled workflow ended so because its last one did.
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, result, error, attempts, max_retries,
         timeout_seconds, run_at, parent_id, parent_seq, created_at, started_at, finished_at,
         lease)
    SELECT {_id_at("a.t")}, 'activity',
           (ARRAY['app.orders:reserve_stock', 'app.orders:charge_card', 'app.orders:ship'])[k],
           w.queue, a.status,
           json_build_object('args', json_build_array(k), 'kwargs', '{{}}'::json),
           CASE WHEN a.status = 'completed' THEN json_build_object('step', k) END,
           CASE WHEN a.status = 'failed' THEN w.error END,
           CASE WHEN a.status = 'failed' THEN 4 ELSE 1 END, 3, 300, a.t, w.id, 2 * k,
           a.t, a.t + interval '5 milliseconds', a.t + interval '400 milliseconds', 1
    FROM {{s}}.executions w
    CROSS JOIN generate_series(1, 3) AS k
    CROSS JOIN LATERAL (
        SELECT w.created_at + make_interval(secs => (ARRAY[0.02, 1.5, 2.5])[k]) AS t,
               CASE WHEN k = 3 AND w.status <> 'completed' THEN w.status
                    ELSE 'completed' END AS status
    ) a
    WHERE w.kind = 'workflow'
    """,
    # Their steps: a version marker, the activities, a timer and a signal wait.
    """
    INSERT INTO {s}.workflow_steps
        (workflow_id, seq, kind, name, status, execution_id, fire_at, result, error,
         delivered_in, created_at, resolved_at)
    SELECT a.parent_id, a.parent_seq, 'activity', a.name, a.status, a.id, NULL, a.result,
           a.error::json, a.parent_seq, a.created_at, a.finished_at
    FROM {s}.executions a WHERE a.kind = 'activity'
    UNION ALL
    SELECT w.id, v.seq, v.kind, v.name, 'completed', NULL,
           CASE WHEN v.kind = 'timer' THEN w.created_at + interval '1.5 seconds' END,
           v.result::json, NULL, v.seq, w.created_at + v.at, w.created_at + v.done
    FROM {s}.executions w
    CROSS JOIN (VALUES (1, 'version', 'orders-v2', '2', interval '10 ms', interval '10 ms'),
                       (3, 'timer', '', NULL, interval '0.5 s', interval '1.5 s'),
                       (5, 'signal', 'approved', '{"approved": true, "by": "ops"}',
                        interval '2 s', interval '2.4 s'))
         AS v(seq, kind, name, result, at, done)
    WHERE w.kind = 'workflow'
    """,
    # The signal each workflow's wait took.
    """
    INSERT INTO {s}.workflow_signals (workflow_id, name, payload, consumed_seq, created_at)
    SELECT w.id, 'approved', '{"approved": true, "by": "ops"}', 5,
           w.created_at + interval '2.3 seconds'
    FROM {s}.executions w WHERE w.kind = 'workflow'
    """,
    # 20 workflows of 50 steps over the week (47 activities, a version marker, a timer at 25,
    # a signal wait at 40), each with three signals received (one taken).
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, result, attempts, max_retries, run_at,
         version, deadline, created_at, started_at, finished_at, lease)
    SELECT {_id_at("x.t")}, 'workflow', '{BIG_WORKFLOW}', 'orders', 'completed',
           json_build_object('args', json_build_array('batch-' || i), 'kwargs', '{{}}'::json),
           json_build_object('imported', 47), 1, 3, x.t, 3, x.t + interval '1 day',
           x.t, x.t + interval '20 ms', x.t + interval '95 seconds', 1
    FROM generate_series(1, 20) AS i,
         LATERAL (SELECT now() - make_interval(hours => i * 8) AS t) x
    """,
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, result, attempts, max_retries,
         timeout_seconds, run_at, parent_id, parent_seq, created_at, started_at, finished_at,
         lease)
    SELECT {_id_at("a.t")}, 'activity', 'app.orders:import_row', w.queue, 'completed',
           json_build_object('args', json_build_array(s), 'kwargs', '{{}}'::json),
           json_build_object('row', s), CASE WHEN s % 9 = 0 THEN 2 ELSE 1 END, 3, 60, a.t,
           w.id, s, a.t, a.t + interval '3 ms', a.t + interval '1.5 seconds', 1
    FROM {{s}}.executions w
    CROSS JOIN generate_series(2, 50) AS s
    CROSS JOIN LATERAL (SELECT w.created_at + make_interval(secs => s * 1.8) AS t) a
    WHERE w.name = '{BIG_WORKFLOW}' AND s NOT IN (25, 40)
    """,
    f"""
    INSERT INTO {{s}}.workflow_steps
        (workflow_id, seq, kind, name, status, execution_id, fire_at, result, delivered_in,
         created_at, resolved_at)
    SELECT a.parent_id, a.parent_seq, 'activity', a.name, a.status, a.id, NULL, a.result,
           a.parent_seq, a.created_at, a.finished_at
    FROM {{s}}.executions a JOIN {{s}}.executions w ON w.id = a.parent_id
    WHERE w.name = '{BIG_WORKFLOW}'
    UNION ALL
    SELECT w.id, v.seq, v.kind, v.name, 'completed', NULL,
           CASE WHEN v.kind = 'timer' THEN w.created_at + v.done END, v.result::json, v.seq,
           w.created_at + v.at, w.created_at + v.done
    FROM {{s}}.executions w
    CROSS JOIN (VALUES (1, 'version', 'import-v3', '3', interval '10 ms', interval '10 ms'),
                       (25, 'timer', '', NULL, interval '45 s', interval '46 s'),
                       (40, 'signal', 'approved', '{{"approved": true}}', interval '72 s',
                        interval '73 s'))
         AS v(seq, kind, name, result, at, done)
    WHERE w.name = '{BIG_WORKFLOW}'
    """,
    f"""
    INSERT INTO {{s}}.workflow_signals (workflow_id, name, payload, consumed_seq, created_at)
    SELECT w.id, v.name, v.payload::json, v.seq, w.created_at + v.at
    FROM {{s}}.executions w
    CROSS JOIN (VALUES ('approved', '{{"approved": true}}', 40, interval '60 s'),
                       ('note', '{{"text": "rows 1-20 checked"}}', NULL, interval '30 s'),
                       ('note', '{{"text": "all checked"}}', NULL, interval '80 s'))
         AS v(name, payload, seq, at)
    WHERE w.name = '{BIG_WORKFLOW}'
    """,
    # Two schedules (one paused) and the runs their ticks made over the week.
    """
    INSERT INTO {s}.schedules
        (name, source, kind, function_name, queue, args, max_retries, timeout_seconds, cron,
         timezone, paused, next_tick, last_tick, ticks_from, created_at, updated_at)
    VALUES ('hourly-report', 'code', 'job', 'app.reports:hourly_report', 'reports',
            '{"args": [], "kwargs": {}}', 3, 600, '0 * * * *', 'UTC', false,
            date_trunc('hour', now()) + interval '1 hour', date_trunc('hour', now()),
            now() - interval '8 days', now() - interval '8 days', now() - interval '8 days'),
           ('crm-sync', 'api', 'job', 'app.tasks:sync_crm', 'default',
            '{"args": ["full"], "kwargs": {}}', 5, 900, '*/15 * * * *', 'Europe/Paris', true,
            NULL, now() - interval '1 day', now() - interval '8 days',
            now() - interval '8 days', now() - interval '1 day')
    """,
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, result, attempts, max_retries, timeout_seconds,
         run_at, schedule_name, schedule_tick, created_at, started_at, finished_at, lease)
    SELECT {_id_at("t.tick")}, 'job', s.function_name, s.queue, 'completed', s.args,
           '{{"ok": true}}', 1, s.max_retries, s.timeout_seconds, t.tick, s.name, t.tick,
           t.tick, t.tick + interval '50 ms', t.tick + interval '40 seconds', 1
    FROM {{s}}.schedules s
    CROSS JOIN LATERAL generate_series(
        date_trunc('hour', now() - interval '7 days') + interval '1 hour',
        CASE WHEN s.paused THEN now() - interval '1 day' ELSE now() - interval '1 minute' END,
        CASE WHEN s.name = 'hourly-report' THEN interval '1 hour' ELSE interval '15 minutes' END
    ) AS t(tick)
    """,
    # Four live workers.
    """
    INSERT INTO {s}.worker_heartbeats
        (worker_id, hostname, pid, queues, code_version, started_at, last_heartbeat,
         running_bound)
    SELECT gen_random_uuid(), 'worker-' || i, 1000 + i,
           CASE WHEN i <= 2 THEN ARRAY['default', 'emails', 'webhooks', 'media']
                WHEN i = 3 THEN ARRAY['orders', 'billing']
                ELSE ARRAY['orders', 'reports', 'billing'] END,
           'v1.42.0', now() - interval '3 hours', now(), 10
    FROM generate_series(1, 4) AS i
    """,
    # 30 jobs running on them.
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, attempts, max_retries, timeout_seconds, run_at,
         worker_id, created_at, started_at, lease)
    SELECT {_id_at("x.t")}, 'job', x.name, x.queue, 'running',
           json_build_object('args', json_build_array(i), 'kwargs', '{{}}'::json), 1, 3, 300,
           x.t, h.worker_id, x.t, x.t + interval '20 ms', 1
    FROM generate_series(1, 30) AS i
    CROSS JOIN LATERAL (
        SELECT now() - make_interval(secs => 2 * i) AS t,
               (ARRAY['emails', 'webhooks', 'default', 'media', 'reports'])[1 + i % 5] AS queue,
               (ARRAY['app.emails:send_receipt', 'app.webhooks:deliver',
                      'app.tasks:refresh_cache', 'app.media:resize_image',
                      'app.reports:daily_summary'])[1 + i % 5] AS name
    ) x
    CROSS JOIN LATERAL (
        SELECT (array_agg(hb.worker_id ORDER BY hb.hostname))[1 + i % count(*)::int]
                   AS worker_id
        FROM {{s}}.worker_heartbeats hb WHERE x.queue = ANY (hb.queues)
    ) h
    """,
    # A concurrency key whose one slot a running job holds, and 150 jobs held behind it (the
    # insert trigger holds them).
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, attempts, max_retries, timeout_seconds, run_at,
         worker_id, concurrency_key, created_at, started_at, lease)
    SELECT {_id_at("now() - interval '3 minutes'")}, 'job', 'app.billing:sync_invoice',
           'billing', 'running', '{{"args": ["tenant-7"], "kwargs": {{}}}}', 1, 3, 300,
           now() - interval '3 minutes', hb.worker_id, 'tenant-7',
           now() - interval '3 minutes', now() - interval '3 minutes', 1
    FROM {{s}}.worker_heartbeats hb WHERE hb.hostname = 'worker-3'
    """,
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, args, max_retries, timeout_seconds, run_at, concurrency_key,
         created_at)
    SELECT {_id_at("x.t")}, 'job', 'app.billing:sync_invoice', 'billing',
           json_build_object('args', json_build_array('tenant-7', i), 'kwargs', '{{}}'::json),
           3, 300, x.t, 'tenant-7', x.t
    FROM generate_series(1, 150) AS i,
         LATERAL (SELECT now() - make_interval(secs => i) AS t) x
    """,
    # A backlog: 2,000 jobs due over the last 5 minutes, 300 due later today.
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, args, max_retries, timeout_seconds, run_at, idempotency_key,
         created_at)
    SELECT {_id_at("x.t")}, 'job', ({_JOB_NAMES})[1 + i % 3], ({_JOB_QUEUES})[1 + i % 3],
           json_build_object('args', json_build_array(i), 'kwargs', '{{}}'::json), 3, 300,
           CASE WHEN i > 2000 THEN now() + make_interval(secs => (i - 2000) * 60) ELSE x.t END,
           CASE WHEN i % 10 = 3 THEN 'pending-' || i END, x.t
    FROM generate_series(1, 2300) AS i,
         LATERAL (SELECT now() - make_interval(secs => (2300 - i) * 0.13) AS t) x
    """,
    # 300 workflows waiting over the last day: 280 for a signal, 20 for an activity that runs.
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, attempts, max_retries, run_at, version, deadline,
         created_at, started_at, lease)
    SELECT {_id_at("x.t")}, 'workflow', 'app.orders:fulfil_order', 'orders', 'waiting',
           json_build_object('args', json_build_array('order-w' || i), 'kwargs', '{{}}'::json),
           1, 3, x.t + interval '2 seconds', 2, x.t + interval '1 day', x.t,
           x.t + interval '10 ms', 1
    FROM generate_series(1, 300) AS i,
         LATERAL (SELECT now() - make_interval(secs => i * 275) AS t) x
    """,
    f"""
    INSERT INTO {{s}}.executions
        (id, kind, name, queue, status, args, result, attempts, max_retries, timeout_seconds,
         run_at, parent_id, parent_seq, worker_id, created_at, started_at, finished_at, lease)
    SELECT {_id_at("w.created_at + make_interval(secs => k)")}, 'activity',
           (ARRAY['app.orders:reserve_stock', 'app.orders:charge_card'])[k], w.queue,
           CASE WHEN w.running AND k = 2 THEN 'running' ELSE 'completed' END,
           '{{"args": [1], "kwargs": {{}}}}',
           CASE WHEN NOT w.running OR k = 1 THEN '{{"step": 1}}'::json END, 1, 3, 300,
           w.created_at, w.id, 2 * k,
           CASE WHEN w.running AND k = 2 THEN w.worker END,
           w.created_at + make_interval(secs => k), w.created_at + make_interval(secs => k),
           CASE WHEN NOT w.running OR k = 1 THEN w.created_at + make_interval(secs => k + 0.4)
           END, 1
    FROM (SELECT e.id, e.queue, e.created_at, row_number() OVER (ORDER BY e.id) <= 20 AS running,
                 (SELECT hb.worker_id FROM {{s}}.worker_heartbeats hb
                  WHERE hb.hostname = 'worker-4') AS worker
          FROM {{s}}.executions e
          WHERE e.kind = 'workflow' AND e.status = 'waiting') w
    CROSS JOIN generate_series(1, 2) AS k
    """,
    """
    INSERT INTO {s}.workflow_steps
        (workflow_id, seq, kind, name, status, execution_id, result, delivered_in, created_at,
         resolved_at)
    SELECT a.parent_id, a.parent_seq, 'activity', a.name,
           CASE WHEN a.status = 'running' THEN 'scheduled' ELSE a.status END, a.id, a.result,
           CASE WHEN a.status = 'running' THEN NULL ELSE a.parent_seq END, a.created_at,
           a.finished_at
    FROM {s}.executions a JOIN {s}.executions w ON w.id = a.parent_id
    WHERE w.status = 'waiting'
    UNION ALL
    SELECT w.id, v.seq, v.kind, v.name, v.status, NULL, v.result::json,
           CASE WHEN v.status = 'completed' THEN v.seq END, w.created_at,
           CASE WHEN v.status = 'completed' THEN w.created_at END
    FROM {s}.executions w
    CROSS JOIN (VALUES (1, 'version', 'orders-v2', 'completed', '2'),
                       (5, 'signal', 'approved', 'scheduled', NULL))
         AS v(seq, kind, name, status, result)
    WHERE w.kind = 'workflow' AND w.status = 'waiting'
      AND (v.seq = 1 OR NOT EXISTS (SELECT 1 FROM {s}.executions r
                                    WHERE r.parent_id = w.id AND r.status = 'running'))
    """,
]


SYSTEM = Ours


def run_worker(dsn: str, concurrency: int, index: int, options: dict[str, Any]) -> None:
    """One embedded worker, as `currant worker -q bench -c N` runs it."""
    os.environ["WORKFLOWS_DATABASE_URL"] = dsn
    os.environ["WORKFLOWS_SCHEMA"] = SCHEMA
    from workflows_worker.worker import Worker

    async def main() -> None:
        worker = Worker([QUEUE], concurrency=concurrency, dsn=dsn)
        install_stop_handlers(worker.stop)
        ready_then_wait_for_go()
        await worker.run()

    asyncio.run(main())
