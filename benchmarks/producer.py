"""A producer process: ``python -m benchmarks.producer SYSTEM DSN TASKS JOBS OPTIONS_JSON OUT``.

``TASKS`` asyncio tasks in this process each enqueue ``JOBS`` no-op jobs one at a time
through the system's client (``System.enqueue``, after ``open_producers``). Set up, it marks
itself ready and waits for the benchmark's go signal, so every process starts together; it
writes ``{"start": t, "end": t, "latencies": [s, ...]}`` (``time.time()`` and seconds) to OUT.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import System, ready_then_wait_for_go
from benchmarks.worker import module_of


async def produce(system: System, tasks: int, jobs: int) -> dict[str, Any]:
    """Run ``tasks`` producers of ``jobs`` enqueues each; their start, end and latencies."""
    latencies: list[float] = []

    async def one(index: int) -> None:
        for i in range(jobs):
            t = time.perf_counter()
            await system.enqueue("noop", float(index * jobs + i))
            latencies.append(time.perf_counter() - t)

    start = time.time()
    await asyncio.gather(*(one(k) for k in range(tasks)))
    return {"start": start, "end": time.time(), "latencies": latencies}


async def warm_up(system: System, tasks: int) -> None:
    """Connections opened and statements prepared before the clock starts."""
    await system.open_producers(tasks)
    await asyncio.gather(*(system.enqueue("noop", -1.0) for _ in range(tasks)))


def main() -> None:
    name, dsn, tasks, jobs, options, out = sys.argv[1:7]
    module = importlib.import_module(module_of(name))

    async def run() -> dict[str, Any]:
        system: System = module.SYSTEM(dsn, json.loads(options))
        await system.open()
        try:
            await warm_up(system, int(tasks))
            ready_then_wait_for_go()
            return await produce(system, int(tasks), int(jobs))
        finally:
            await system.close()

    Path(out).write_text(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()
