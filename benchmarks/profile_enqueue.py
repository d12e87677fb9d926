"""Where the producer's single enqueue spends its CPU (issue 16).

``python -m benchmarks.profile_enqueue [--calls N] [--sync] [--cpu] [--top K] [--dsn URL]
[--out FILE]``

Against the real database (a PostgreSQL the script starts, as ``python -m benchmarks`` does,
or ``--dsn``): ``N`` (10,000) calls of ``await noop.queue(x)`` (``noop.queue_sync(x)`` with
``--sync``) one at a time after a warm-up, first unprofiled (wall time and the process's CPU
time per call), then under cProfile; prints the top ``K`` (15) functions by own time and
writes the raw profile to ``--out`` (for ``python -m pstats`` or snakeviz). ``--cpu`` times
the profile with the process's CPU clock instead of the wall clock, so waiting on the
database (``epoll``, a blocking ``recv``) drops out and what is left is the client's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

from benchmarks.common import drop_database, fresh_database

DB = "bench_profile_enqueue"


async def measure(
    dsn: str, calls: int, sync: bool, out: Path | None, top: int, cpu_clock: bool = False
) -> str:
    from benchmarks.ours import Ours, noop

    system = Ours(dsn, {})
    await system.setup()
    await system.open()
    try:

        async def run(n: int) -> None:
            if sync:
                for i in range(n):
                    noop.queue_sync(float(i))
            else:
                for i in range(n):
                    await noop.queue(float(i))

        await run(100)  # the pool, prepared statements, caches
        cpu, wall = time.process_time(), time.perf_counter()
        await run(calls)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        profiler = cProfile.Profile(time.process_time) if cpu_clock else cProfile.Profile()
        profiler.enable()
        await run(calls)
        profiler.disable()
    finally:
        await system.close()
    if out is not None:
        profiler.dump_stats(str(out))
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    call = "noop.queue_sync(x)" if sync else "await noop.queue(x)"
    head = (
        f"{calls:,} x {call}, unprofiled: {calls / wall:,.0f} calls/s, "
        f"{cpu / calls * 1e6:.1f} µs of process CPU per call "
        f"({wall / calls * 1e6:.1f} µs wall); profile timed by the "
        f"{'process CPU' if cpu_clock else 'wall'} clock\n"
    )
    return head + text.getvalue()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_enqueue")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--sync", action="store_true", help="profile .queue_sync() instead")
    parser.add_argument("--cpu", action="store_true", help="profile by CPU time, not wall time")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--dsn", help="an existing server's admin URL (a superuser)")
    parser.add_argument("--out", type=Path, help="write the raw cProfile stats here")
    args = parser.parse_args(argv)
    from benchmarks.__main__ import server

    async def go(admin: str) -> str:
        dsn = await fresh_database(admin, DB)
        try:
            return await measure(dsn, args.calls, args.sync, args.out, args.top, args.cpu)
        finally:
            await drop_database(admin, DB)

    with server(args.dsn) as (admin, _, _):
        print(asyncio.run(go(admin)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
