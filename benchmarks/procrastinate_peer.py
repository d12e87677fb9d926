"""Procrastinate (procrastinate-org/procrastinate): the same jobs, its client and its worker.

Defaults kept: LISTEN/NOTIFY on, its fetch polling interval, jobs kept after they finish (as
ours are). It has no workflows. Its worker takes one job per fetch query.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.common import (
    NAP_SECONDS,
    QUEUE,
    System,
    mark_first,
    mark_latency,
    ready_then_wait_for_go,
)


def make_app(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(queue=QUEUE, name="noop")
    async def noop(x: float) -> None:
        mark_first()

    @app.task(queue=QUEUE, name="ping")
    async def ping(enqueued_at: float) -> None:
        mark_latency(enqueued_at)

    @app.task(queue=QUEUE, name="nap")
    async def nap(x: float) -> None:
        mark_first()
        await asyncio.sleep(NAP_SECONDS)

    return app


_ARG = {"noop": "x", "ping": "enqueued_at", "nap": "x"}


class Procrastinate(System):
    name = "procrastinate"

    def __init__(self, dsn: str, options: dict[str, Any]) -> None:
        super().__init__(dsn, options)
        self.app: Any = None
        self.worker_id: int | None = None

    async def setup(self) -> None:
        app = make_app(self.dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def open(self) -> None:
        await super().open()
        self.app = make_app(self.dsn)
        await self.app.open_async()

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close_async()
        await super().close()

    async def enqueue(self, task: str, arg: float) -> None:
        await self.app.tasks[task].defer_async(**{_ARG[task]: arg})

    async def enqueue_many(self, task: str, args: list[float]) -> None:
        await self.app.tasks[task].batch_defer_async(*({_ARG[task]: a} for a in args))

    async def remaining(self) -> int:
        n: int = await self.conn.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
        return n

    async def failures(self) -> int:
        n: int = await self.conn.fetchval(
            "SELECT count(*) FROM procrastinate_jobs "
            "WHERE status IN ('failed', 'cancelled', 'aborted')"
        )
        return n

    async def claim_load(self, n: int) -> None:
        await self.conn.execute(
            """
            INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
            SELECT $1, 'noop', '{"x": 0}'::jsonb, 'todo' FROM generate_series(1, $2)
            """,
            QUEUE,
            n,
        )
        await self.conn.execute("VACUUM ANALYZE procrastinate_jobs")
        self.worker_id = await self.app.job_manager.register_worker()

    async def claim_once(self) -> int:
        # The query its worker runs for each job (procrastinate_fetch_job_v2): one job a call.
        job = await self.app.job_manager.fetch_job(queues=[QUEUE], worker_id=self.worker_id)
        return 0 if job is None else 1


SYSTEM = Procrastinate


def run_worker(dsn: str, concurrency: int, index: int, options: dict[str, Any]) -> None:
    async def main() -> None:
        app = make_app(dsn)
        async with app.open_async():
            ready_then_wait_for_go()
            # Its own SIGTERM handling stops the worker gracefully.
            await app.run_worker_async(queues=[QUEUE], concurrency=concurrency, wait=True)

    asyncio.run(main())
