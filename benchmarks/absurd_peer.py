"""Absurd (earendil-works/absurd): the same 10-step workflow, its SDK's client and worker.

Absurd is a schema of SQL functions plus a thin SDK (``absurd-sdk``, psycopg). The schema is
the one its own CLI package installs with ``absurdctl init`` (``absurdctl``'s bundled
``absurd.sql``, pinned to the SDK's release in the ``bench`` session), applied here with
psycopg instead of psql. A workflow is an Absurd task whose steps are ``ctx.step`` calls:
checkpoints written by the worker that runs the task, in its own process, with no execution
of their own.

The worker is ``AsyncAbsurd.start_worker(concurrency=N)``, as its documentation shows: it
claims up to N tasks per poll (``claim_task``), runs them on its one connection and polls
again when they are done; when a poll finds nothing it sleeps ``poll_interval`` (default
0.25 s). Option ``poll`` sets it: the ``absurd-fast`` variant uses 0, the lowest the SDK
accepts (it polls again at once: the worker spins on ``claim_task`` while idle), so its
latency has no polling wait left to speak of. Absurd measures workflows only here (it is the
closest peer on workflow latency, issue 16).
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.common import (
    QUEUE,
    System,
    install_stop_handlers,
    mark_first,
    ready_then_wait_for_go,
)

TASK = "flow"
_FINAL = "('completed', 'failed', 'cancelled')"


def schema_sql() -> str:
    """Absurd's schema as its CLI installs it (same release as the SDK)."""
    import absurdctl  # type: ignore[import-not-found]

    sql: str = absurdctl.BUNDLED_SCHEMA_SQL
    return sql


def _app(dsn: str) -> Any:
    from absurd_sdk import AsyncAbsurd  # type: ignore[import-not-found]

    return AsyncAbsurd(dsn, queue_name=QUEUE)


class Absurd(System):
    name = "absurd"
    has_workflows = True

    def __init__(self, dsn: str, options: dict[str, Any]) -> None:
        super().__init__(dsn, options)
        self.app: Any = None
        # The SDK's default when the option is absent: what a new user gets.
        self.poll_interval = float(options.get("poll", 0.25))

    async def setup(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(schema_sql())  # type: ignore[arg-type]
        app = _app(self.dsn)
        try:
            await app.create_queue(QUEUE)
        finally:
            await app.close()

    async def open(self) -> None:
        await super().open()
        self.app = _app(self.dsn)

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close()
        await super().close()

    async def start_workflow(self, steps: int) -> str:
        # Another process than the worker: the SDK wants the queue named explicitly then.
        spawned = await self.app.spawn(TASK, {"steps": steps}, queue=QUEUE)
        return str(spawned["task_id"])

    async def remaining(self) -> int:
        n: int = await self.conn.fetchval(
            f"SELECT count(*) FROM absurd.t_{QUEUE} WHERE state NOT IN {_FINAL}"
        )
        return n

    async def failures(self) -> int:
        # Runs, not tasks: a failed attempt that a retry then completed counts too.
        n: int = await self.conn.fetchval(
            f"SELECT count(*) FROM absurd.r_{QUEUE} WHERE state IN ('failed', 'cancelled')"
        )
        return n

    async def _run_row(self, workflow_id: str) -> Any:
        row = await self.conn.fetchrow(
            f"""
            SELECT t.state,
                   extract(epoch FROM r.started_at)::float8 AS started,
                   extract(epoch FROM r.completed_at)::float8 AS completed
            FROM absurd.t_{QUEUE} t
            LEFT JOIN absurd.r_{QUEUE} r ON r.run_id = t.last_attempt_run
            WHERE t.task_id = $1::uuid
            """,
            workflow_id,
        )
        if row["state"] in ("failed", "cancelled"):
            raise RuntimeError(f"workflow {workflow_id} {row['state']}")
        return row

    async def workflow_finished_at(self, workflow_id: str) -> float | None:
        row = await self._run_row(workflow_id)
        # completed_at: written by complete_run with the database's clock.
        return float(row["completed"]) if row["state"] == "completed" else None

    async def workflow_started_at(self, workflow_id: str) -> float | None:
        """When the worker's claim took the task (claim_task's clock)."""
        row = await self._run_row(workflow_id)
        return None if row["started"] is None else float(row["started"])


SYSTEM = Absurd


def run_worker(dsn: str, concurrency: int, index: int, options: dict[str, Any]) -> None:
    async def main() -> None:
        app = _app(dsn)

        @app.register_task(name=TASK)  # type: ignore[misc]
        async def flow(params: dict[str, Any], ctx: Any) -> int:
            mark_first()
            n = int(params["steps"])
            for i in range(n):

                async def step(i: int = i) -> int:
                    return i

                await ctx.step(f"step-{i}", step)
            return n

        install_stop_handlers(app.stop_worker)
        ready_then_wait_for_go()
        kwargs: dict[str, Any] = {}
        if "poll" in options:
            kwargs["poll_interval"] = float(options["poll"])
        try:
            await app.start_worker(worker_id=f"bench-{index}", concurrency=concurrency, **kwargs)
        finally:
            await app.close()

    asyncio.run(main())
