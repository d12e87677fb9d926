"""Two workers and 300 jobs plus 30 three-step workflows; one worker is SIGKILLed and PostgreSQL
is restarted mid-run; a third worker joins. Everything completes, once, with its side effects,
and the surviving worker is still running."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import chaos_app
from tests.chaos.conftest import prepare
from tests.chaos.harness import (
    HEARTBEAT_TIMEOUT,
    Expected,
    check_invariants,
    fleet_of,
    orphaned,
    wait_all_final,
)
from workflows_postgres.cluster import LocalCluster, free_port
from workflows_postgres.migrate import apply_migrations

JOBS = 300
WORKFLOWS = 30
# Longer than the heartbeat timeout: every heartbeat in the database is stale when it is back.
DOWNTIME = HEARTBEAT_TIMEOUT + 1.5


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalCluster, str]]:
    """A PostgreSQL of this test's own, so it can be stopped and started mid-run."""
    tmp = Path(tempfile.mkdtemp(prefix="workflows-chaos-pg-"))
    # mkdtemp makes it 0700; as root the server runs as `postgres` and must enter it.
    tmp.chmod(0o755)
    cluster = LocalCluster(tmp / "data", host="127.0.0.1", port=free_port(), fast=True)
    try:
        cluster.init()
        cluster.start()
        dsn = cluster.dsn()
        apply_migrations(dsn)
        monkeypatch.setenv("WORKFLOWS_DATABASE_URL", dsn)
        yield cluster, dsn
    finally:
        try:
            cluster.stop("immediate")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(300)
def test_sigkill_and_postgres_restart_mid_run_lose_nothing(
    own_server: tuple[LocalCluster, str], tmp_path: Path, chaos_seed: int
) -> None:
    cluster, dsn = own_server
    rng = random.Random(chaos_seed)
    db = prepare(dsn)
    with fleet_of(dsn, tmp_path, db) as fleet:
        victim, survivor = fleet.start(), fleet.start()
        fleet.wait_ready(victim, survivor)
        began = time.monotonic()
        expected = Expected()
        for n in range(JOBS):
            key = f"job-{n}"
            expected.jobs[chaos_app.work.queue_sync(key, round(rng.uniform(0.01, 0.1), 3))] = key
        for n in range(WORKFLOWS):
            key = f"wf-{n}"
            wf = chaos_app.three_steps.queue_sync(key, round(rng.uniform(0.01, 0.1), 3))
            expected.workflows[wf] = key
            expected.steps[wf] = 3
        ids = expected.ids()

        def completed() -> int:
            return int(
                db.value(
                    "SELECT count(*) FROM workflows.executions WHERE status = 'completed' "
                    "AND id = ANY(%s::uuid[])",
                    (ids,),
                )
            )

        while completed() < len(ids) // 4:
            time.sleep(0.02)
        victim.kill()
        killed_at = time.monotonic()
        at_kill = completed()
        cluster.stop("fast")
        time.sleep(DOWNTIME)
        cluster.start()
        restarted_at = time.monotonic()
        joiner = fleet.start()
        fleet.wait_ready(joiner)

        drained = wait_all_final(db, ids, timeout=180)
        total = time.monotonic() - began
        checked = check_invariants(db, expected)
        assert not orphaned(db, [w.pid for w in fleet.live()])
        assert db.value(
            "SELECT count(*) FROM workflows.worker_heartbeats WHERE worker_id = %s",
            (victim.worker_id,),
        ) == 0, "the killed worker was never recovered"
        recovered_at = db.value(
            "SELECT max(at) FROM chaos_final_transitions WHERE status = 'completed'"
        )

        assert survivor.alive(), f"the surviving worker died:\n{survivor.log()[-3000:]}"
        by_pid = {
            r["pid"]: r["n"]
            for r in db.rows("SELECT pid, count(*) AS n FROM chaos_side_effects GROUP BY pid")
        }
        print(
            f"postgres restart: {JOBS} jobs + {WORKFLOWS} workflows ({checked.executions} "
            f"executions) done in {total:.1f} s; {at_kill} completed at the SIGKILL, "
            f"database down {restarted_at - killed_at:.1f} s, all final {drained:.1f} s later "
            f"(last at {recovered_at}); {checked.repeated_side_effects} side effects repeated, "
            f"{checked.rerun_executions} runs repeated; side effects by worker "
            f"victim {by_pid.get(victim.pid, 0)}, survivor {by_pid.get(survivor.pid, 0)}, "
            f"joiner {by_pid.get(joiner.pid, 0)}"
        )
        exits = fleet.stop_all()
        assert exits == {survivor.name: 0, joiner.name: 0}
        assert db.value("SELECT count(*) FROM workflows.worker_heartbeats") == 0
    db.close()

