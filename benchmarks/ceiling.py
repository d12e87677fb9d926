"""The ceiling: what the server itself does for one insert + one update by key per transaction.

pgbench with 10 clients (our worker's concurrency), on the same server, a table shaped like a
queue's (an id, a status, a jsonb payload), 100,000 rows to update.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import drop_database, fresh_database

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


async def run(admin_dsn: str, bindir: Path | None, runs: int, seconds: int) -> dict[str, Any]:
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
        "runs": [{"ceiling_tps": t} for t in tps],
        "notes": {
            "command": f"pgbench -n -M prepared -c {CLIENTS} -j 2 -T {seconds}",
            "script": SCRIPT,
        },
    }
