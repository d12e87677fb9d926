"""PgQueuer (janbjorge/pgqueuer): the same jobs, its client and its worker.

Its worker is run as its documentation shows (one asyncpg connection, ``PgQueuer.run``).
"Concurrency N" is ``max_concurrent_tasks=N``, its hard cap on a worker's picked jobs; it
requires ``batch_size <= N / 2``, so the batch is N / 2. It has no workflows; its queues are
entrypoints. Finished jobs leave its queue table (they are logged in ``pgqueuer_log``).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from benchmarks.common import (
    NAP_SECONDS,
    System,
    install_stop_handlers,
    mark_first,
    mark_latency,
    ready_then_wait_for_go,
)

TASKS = ("noop", "ping", "nap")


class PgQueuerSystem(System):
    name = "pgqueuer"
    bulk_chunk = 10_000

    def __init__(self, dsn: str, options: dict[str, Any]) -> None:
        super().__init__(dsn, options)
        self.client: Any = None
        self.queries: Any = None
        self.pool: Any = None
        self.sync_client: Any = None
        self.sync_queries: Any = None

    async def setup(self) -> None:
        import asyncpg
        from pgqueuer import Queries

        conn = await asyncpg.connect(self.dsn)
        try:
            await Queries.from_asyncpg_connection(conn).install()
        finally:
            await conn.close()

    async def open(self) -> None:
        import asyncpg
        from pgqueuer import Queries

        await super().open()
        self.client = await asyncpg.connect(self.dsn)
        self.queries = Queries.from_asyncpg_connection(self.client)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.pool is not None:
            await self.pool.close()
        if self.sync_client is not None:
            self.sync_client.close()
        await super().close()

    async def enqueue(self, task: str, arg: float) -> None:
        await self.queries.enqueue(task, repr(arg).encode())

    def enqueue_sync(self, task: str, arg: float) -> None:
        # Its synchronous client, as its documentation sets it up: a psycopg connection in
        # autocommit under SyncQueries.
        if self.sync_queries is None:
            import psycopg
            from pgqueuer.db import SyncPsycopgDriver
            from pgqueuer.queries import SyncQueries

            self.sync_client = psycopg.connect(self.dsn, autocommit=True)
            self.sync_queries = SyncQueries(SyncPsycopgDriver(self.sync_client))
        self.sync_queries.enqueue(task, repr(arg).encode())

    async def open_producers(self, n: int) -> None:
        # One asyncpg connection runs one query at a time: concurrent producers share a pool
        # (asyncpg's default size, 10, as our default store's).
        import asyncpg
        from pgqueuer import Queries

        self.pool = await asyncpg.create_pool(self.dsn)
        self.queries = Queries.from_asyncpg_pool(self.pool)

    async def enqueue_many(self, task: str, args: list[float]) -> None:
        await self.queries.enqueue(
            [task] * len(args), [repr(a).encode() for a in args], [0] * len(args)
        )

    async def remaining(self) -> int:
        n: int = await self.conn.fetchval("SELECT count(*) FROM pgqueuer")
        return n

    async def failures(self) -> int:
        n: int = await self.conn.fetchval(
            "SELECT count(*) FROM pgqueuer_log WHERE status IN ('exception', 'failed', 'canceled')"
        )
        return n

    async def claim_load(self, n: int) -> None:
        await self.conn.execute(
            """
            INSERT INTO pgqueuer (priority, entrypoint, payload, status)
            SELECT 0, 'noop', '0'::bytea, 'queued' FROM generate_series(1, $1)
            """,
            n,
        )
        await self.conn.execute("VACUUM ANALYZE pgqueuer")
        self.manager_id = uuid.uuid4()

    async def claim_once(self) -> int:
        from pgqueuer.ports.repository import EntrypointExecutionParameter

        # The dequeue its QueueManager runs, for a batch of 10.
        jobs = await self.queries.dequeue(
            batch_size=10,
            entrypoints={"noop": EntrypointExecutionParameter(concurrency_limit=0)},
            queue_manager_id=self.manager_id,
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),
        )
        return len(jobs)


SYSTEM = PgQueuerSystem


def run_worker(dsn: str, concurrency: int, index: int, options: dict[str, Any]) -> None:
    async def main() -> None:
        import asyncpg
        from pgqueuer import PgQueuer

        conn = await asyncpg.connect(dsn)
        pgq = PgQueuer.from_asyncpg_connection(conn)

        @pgq.entrypoint("noop")
        async def noop(job: Any) -> None:
            mark_first()

        @pgq.entrypoint("ping")
        async def ping(job: Any) -> None:
            mark_latency(float(job.payload.decode()))

        @pgq.entrypoint("nap")
        async def nap(job: Any) -> None:
            mark_first()
            await asyncio.sleep(NAP_SECONDS)

        install_stop_handlers(pgq.shutdown.set)
        ready_then_wait_for_go()
        await pgq.run(batch_size=max(1, concurrency // 2), max_concurrent_tasks=concurrency)

    asyncio.run(main())
