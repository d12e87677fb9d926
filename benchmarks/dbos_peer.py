"""DBOS Transact for Python (dbos-inc/dbos-transact-py): the same jobs and workflow.

A job is a workflow enqueued on a DBOS queue by a ``DBOSClient`` (another process, as our
client is); a worker is a process that launched DBOS and serves the queue with
``worker_concurrency=N``. DBOS queues are polled: option ``poll`` is the queue's
``polling_interval_sec`` (its default is 1 s). Every executor gets its own ``executor_id``.
DBOS has no bulk enqueue and no public dequeue call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from dbos import DBOS

from benchmarks.common import (
    NAP_SECONDS,
    QUEUE,
    ROOT,
    System,
    mark_first,
    mark_latency,
    ready_then_wait_for_go,
)

APP = "bench"
VERSION = "bench"  # fixed, so the client's workflows are this app's latest version


@DBOS.workflow(name="noop")
async def noop(x: float) -> None:
    mark_first()


@DBOS.workflow(name="ping")
async def ping(enqueued_at: float) -> None:
    mark_latency(enqueued_at)


@DBOS.workflow(name="nap")
async def nap(x: float) -> None:
    mark_first()
    await asyncio.sleep(NAP_SECONDS)


@DBOS.step(name="step")
async def step(i: int) -> int:
    return i


@DBOS.workflow(name="flow")
async def flow(n: int) -> int:
    mark_first()
    for i in range(n):
        await step(i)
    return n


def _config(dsn: str, executor: str) -> Any:
    return {
        "name": APP,
        "system_database_url": dsn,
        "application_version": VERSION,
        "executor_id": executor,
        "log_level": "WARNING",
    }


class Dbos(System):
    name = "dbos"
    has_workflows = True

    def __init__(self, dsn: str, options: dict[str, Any]) -> None:
        super().__init__(dsn, options)
        self.client: Any = None
        self.poll_interval = float(options.get("poll", 1.0))

    async def setup(self) -> None:
        # DBOS creates its schema and the queue on launch: done once, in a process of its own
        # (a launched DBOS would serve the queue itself).
        import json

        argv = [
            sys.executable,
            "-m",
            "benchmarks.worker",
            self.name,
            self.dsn,
            "10",
            "-1",
            json.dumps({**self.options, "setup": True}),
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        result = await asyncio.to_thread(
            subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"DBOS setup failed: {result.stderr[-2000:]}")

    async def open(self) -> None:
        from dbos import DBOSClient

        await super().open()
        self.client = DBOSClient(system_database_url=self.dsn, application_name=APP)

    async def close(self) -> None:
        if self.client is not None:
            self.client.destroy()
        await super().close()

    async def enqueue(self, task: str, arg: float) -> None:
        await self.client.enqueue_async({"queue_name": QUEUE, "workflow_name": task}, arg)

    async def preload(self, task: str, n: int) -> None:
        # No bulk API: concurrent enqueues, as many as the client's connection pool holds.
        await _concurrently(n, lambda i: self.enqueue(task, float(i)))

    async def preload_workflows(self, steps: int, n: int) -> None:
        await _concurrently(n, lambda i: self.start_workflow(steps))

    async def start_workflow(self, steps: int) -> str:
        handle = await self.client.enqueue_async(
            {"queue_name": QUEUE, "workflow_name": "flow"}, steps
        )
        workflow_id: str = handle.workflow_id
        return workflow_id

    async def remaining(self) -> int:
        n: int = await self.conn.fetchval(
            "SELECT count(*) FROM dbos.workflow_status "
            "WHERE queue_name = $1 AND status IN ('ENQUEUED', 'PENDING')",
            QUEUE,
        )
        return n

    async def failures(self) -> int:
        n: int = await self.conn.fetchval(
            "SELECT count(*) FROM dbos.workflow_status WHERE status NOT IN "
            "('ENQUEUED', 'PENDING', 'SUCCESS')"
        )
        return n

    async def workflow_finished_at(self, workflow_id: str) -> float | None:
        row = await self.conn.fetchrow(
            "SELECT status, completed_at FROM dbos.workflow_status WHERE workflow_uuid = $1",
            workflow_id,
        )
        if row["status"] not in ("ENQUEUED", "PENDING", "SUCCESS"):
            raise RuntimeError(f"workflow {workflow_id} {row['status']}")
        # completed_at: epoch milliseconds, the database's clock when the outcome was written.
        return row["completed_at"] / 1000 if row["status"] == "SUCCESS" else None


SYSTEM = Dbos


async def _concurrently(n: int, call: Any, width: int = 5) -> None:
    sem = asyncio.Semaphore(width)

    async def one(i: int) -> None:
        async with sem:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(n)))


def run_worker(dsn: str, concurrency: int, index: int, options: dict[str, Any]) -> None:
    poll = float(options.get("poll", 1.0))
    DBOS(config=_config(dsn, f"worker-{index}"))
    if options.get("setup"):
        DBOS.launch()
        DBOS.register_queue(
            QUEUE,
            worker_concurrency=concurrency,
            polling_interval_sec=poll,
            on_conflict="always_update",
        )
        DBOS.destroy()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready_then_wait_for_go()
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        polling_interval_sec=poll,
        on_conflict="always_update",
    )
    stop.wait()
    # DBOS.destroy() joins its background threads for up to 10 s each; the benchmark has
    # measured what it wanted by now, so give it a moment, then leave.
    threading.Thread(target=DBOS.destroy, daemon=True).start()
    time.sleep(1)
    os._exit(0)
