"""The ceiling and the floor: what the server itself does, without any queue's code.

Ceiling: pgbench with 10 clients (our worker's concurrency), on the same server, one insert +
one update by key per transaction, on a table shaped like a queue's (an id, a status, a jsonb
payload), 100,000 rows to update. A job costs at least that (its enqueue, its outcome).

Floor (issue 16): 10 sequential single-row INSERTs, each its own autocommit transaction (so
each waits for its WAL flush), from one client (asyncpg, a prepared statement), timed
together; the p50 of ``floor_samples`` of them per run. 10 durable steps, one after the
other, cannot take less on this server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import drop_database, fresh_database, percentile

SCRIPT = """\
\\set k random(1, 100000)
BEGIN;
INSERT INTO ceiling (status, payload) VALUES ('pending', '{"args": [0], "kwargs": {}}');
UPDATE ceiling SET status = 'done' WHERE id = :k;
END;
"""
CLIENTS = 10


def find_pgbench(bindir: Path | None) -> str:
    if bindir is not None and (bindir / "pgbench").exists():
        return str(bindir / "pgbench")
    found = shutil.which("pgbench")
    if found:
        return found
    from workflows_postgres.cluster import candidate_bindirs

    for folder in candidate_bindirs():
        if (folder / "pgbench").exists():
            return str(folder / "pgbench")
    raise FileNotFoundError(
        "pgbench not found (Debian: it comes with postgresql-<version>; "
        "apt-get install postgresql-contrib on older releases)"
    )


FLOOR_STEPS = 10


async def floor(dsn: str, samples: int) -> dict[str, float]:
    """10 sequential autocommit single-row INSERTs from one client: p50 and p99 of their time
    (ms), and the p50 of one INSERT's commit."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS floor_steps (id bigserial PRIMARY KEY, "
            "status text NOT NULL, payload jsonb NOT NULL)"
        )
        insert = await conn.prepare(
            "INSERT INTO floor_steps (status, payload) VALUES ('done', '{\"result\": 0}')"
        )
        for _ in range(FLOOR_STEPS):  # the connection and the statement warm
            await insert.fetch()
        tens: list[float] = []
        ones: list[float] = []
        for _ in range(samples):
            start = time.perf_counter()
            for _ in range(FLOOR_STEPS):
                t = time.perf_counter()
                await insert.fetch()
                ones.append(time.perf_counter() - t)
            tens.append(time.perf_counter() - start)
    finally:
        await conn.close()
    return {
        "floor10_ms": percentile(tens, 50) * 1000,
        "floor10_p99_ms": percentile(tens, 99) * 1000,
        "floor_commit_ms": percentile(ones, 50) * 1000,
    }


async def run(
    admin_dsn: str, bindir: Path | None, runs: int, seconds: int, floor_samples: int = 200
) -> dict[str, Any]:
    import asyncpg

    pgbench = find_pgbench(bindir)
    dsn = await fresh_database(admin_dsn, "bench_ceiling")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "CREATE TABLE ceiling (id bigserial PRIMARY KEY, status text NOT NULL, "
                "payload jsonb NOT NULL)"
            )
            await conn.execute(
                "INSERT INTO ceiling (status, payload) SELECT 'pending', '{}' "
                "FROM generate_series(1, 100000)"
            )
            await conn.execute("VACUUM ANALYZE ceiling")
        finally:
            await conn.close()
        floors = [await floor(dsn, floor_samples) for _ in range(runs)]
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(SCRIPT)
            script = f.name
        tps = []
        for _ in range(runs):
            argv = [
                pgbench,
                "-n",
                "-M",
                "prepared",
                "-f",
                script,
                "-c",
                str(CLIENTS),
                "-j",
                "2",
                "-T",
                str(seconds),
                dsn,
            ]
            result = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=seconds + 120
            )
            match = re.search(r"tps = ([\d.]+)", result.stdout)
            if result.returncode != 0 or not match:
                raise RuntimeError(f"pgbench failed: {(result.stderr or result.stdout)[-1500:]}")
            tps.append(float(match[1]))
        os.unlink(script)
    finally:
        await drop_database(admin_dsn, "bench_ceiling")
    return {
        "runs": [{"ceiling_tps": t, **f} for t, f in zip(tps, floors, strict=True)],
        "notes": {
            "command": f"pgbench -n -M prepared -c {CLIENTS} -j 2 -T {seconds}",
            "script": SCRIPT,
            "floor": f"{FLOOR_STEPS} sequential autocommit INSERTs, {floor_samples} samples "
            "per run",
        },
    }
