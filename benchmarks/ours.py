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
        from workflows_postgres.client import reset_async

        await reset_async()
        if self.store is not None:
            await self.store.close()
        await super().close()

    async def enqueue(self, task: str, arg: float) -> None:
        await TASKS[task].queue(arg)

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
