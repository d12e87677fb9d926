"""Two workers and 300 jobs plus 30 three-step workflows; one worker is SIGKILLed and PostgreSQL
is restarted mid-run; a third worker joins. Everything completes, once, with its side effects,
and the surviving worker is still running."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos import chaos_app
from tests.chaos.harness import (
    HEARTBEAT_TIMEOUT,
    Db,
    Expected,
    WorkerProcess,
    check_invariants,
    fleet_of,
    orphaned,
    prepare,
    wait_all_final,
)
from workflows_postgres.cluster import LocalCluster, free_port
from workflows_postgres.migrate import apply_migrations

JOBS = 300
WORKFLOWS = 30
# Longer than the heartbeat timeout: every heartbeat in the database is stale when it is back.
DOWNTIME = HEARTBEAT_TIMEOUT + 1.5


def check_scrape(db: Db, port: int, worker: WorkerProcess) -> None:
    """The worker is healthy again, and its /metrics parses and counts what the database says
    it did."""
    # Healthy once its listening session is back: within the listener's reconnect backoff
    # (at most 2 s) of the database's return, which the drain may well beat.
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                assert (response.status, response.read()) == (200, b"ok")
            break
        except urllib.error.HTTPError as exc:
            assert exc.code == 503, exc
            assert time.monotonic() < deadline, "the worker stayed unhealthy after the restart"
            time.sleep(0.05)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    for name in (
        "workflows_attempts",
        "workflows_executions_finished",
        "workflows_execution_duration_seconds",
        "workflows_pickup_latency_seconds",
        "workflows_executions_in_progress",
        "workflows_queue_depth",
        "workflows_workers_alive",
    ):
        assert name in families, f"{name} missing"

    def completed(kind: str) -> float:
        return sum(
            s.value
            for s in families["workflows_executions_finished"].samples
            if s.name == "workflows_executions_finished_total"
            and s.labels == {"queue": "chaos", "kind": kind, "status": "completed"}
        )

    # Results name the process that produced them (jobs directly, steps through their token).
    jobs = db.value(
        "SELECT count(*) FROM workflows.executions WHERE kind = 'job' AND status = 'completed' "
        "AND (result->>'pid')::int = %s",
        (worker.pid,),
    )
    steps = db.value(
        "SELECT count(*) FROM workflows.executions e JOIN chaos_side_effects s "
        "ON s.token = e.result #>> '{}' WHERE e.kind = 'activity' AND e.status = 'completed' "
        "AND s.pid = %s",
        (worker.pid,),
    )
    # An outcome committed just as the server went down, its reply lost, is recorded again,
    # finds itself recorded already and is counted as discarded: the one allowed difference.
    lost_replies = worker.log().count("discarded the result of")
    assert jobs + steps > 0
    assert completed("job") + completed("activity") + lost_replies == jobs + steps
    assert completed("job") <= jobs and completed("activity") <= steps
    in_progress = families["workflows_executions_in_progress"].samples
    assert sum(s.value for s in in_progress) == 0
    alive = families["workflows_workers_alive"].samples[0].value
    assert alive >= 1


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


@pytest.mark.timeout(120)
def test_postgres_restart_declares_no_live_worker_dead(
    own_server: tuple[LocalCluster, str], tmp_path: Path
) -> None:
    """Nobody can beat while the server is down: when it is back, every heartbeat is stale,
    and the first worker to reconnect must not take its live peers for dead (that would fail
    their in-flight jobs as "worker lost", for good when no retry is left)."""
    cluster, dsn = own_server
    db = prepare(dsn)
    with fleet_of(dsn, tmp_path, db) as fleet:
        workers = [fleet.start() for _ in range(3)]
        fleet.wait_ready(*workers)
        jobs = {
            chaos_app.outlive.queue_sync(f"in-flight-{n}", 3.0): f"in-flight-{n}" for n in range(18)
        }
        # Every job has written its side effect and sleeps through what follows.
        while db.value("SELECT count(*) FROM chaos_side_effects") < len(jobs):
            time.sleep(0.02)
        cluster.stop("fast")
        time.sleep(DOWNTIME)
        cluster.start()
        drained = wait_all_final(db, list(jobs), timeout=60)
        logs = fleet.logs()
        print(
            f"postgres restart under {len(jobs)} running jobs: all final {drained:.1f} s after "
            f"the restart; {logs.count('recovered dead worker')} workers declared dead"
        )
        assert "recovered dead worker" not in logs
        assert "declared dead by a peer" not in logs
        check_invariants(db, Expected(jobs=jobs))
        assert all(w.alive() for w in workers)
        assert set(fleet.stop_all().values()) == {0}
    db.close()


@pytest.mark.timeout(120)
def test_postgres_restart_during_workflow_activations_strands_nothing(
    own_server: tuple[LocalCluster, str], tmp_path: Path
) -> None:
    """An activation cut off by the restart cannot be written: its worker, which never stopped
    beating, must write it once the server is up, and strand nothing."""
    cluster, dsn = own_server
    db = prepare(dsn)
    with fleet_of(dsn, tmp_path, db) as fleet:
        workers = [fleet.start() for _ in range(2)]
        fleet.wait_ready(*workers)
        expected = Expected()
        for n in range(8):
            # Each activation burns ~0.15 s of CPU on the worker's loop: the stop lands in some.
            # (Not much more: a replay runs every burn again, and a loop blocked for longer
            # than the heartbeat timeout gets its worker taken for dead.)
            wf = chaos_app.three_steps.queue_sync(f"cut-{n}", 0.01, 120_000)
            expected.workflows[wf] = f"cut-{n}"
            expected.steps[wf] = 3
        while not db.value(
            "SELECT count(*) FROM workflows.executions WHERE kind = 'workflow' "
            "AND status = 'running'"
        ):
            time.sleep(0.005)
        cluster.stop("fast")
        time.sleep(1.0)
        cluster.start()
        drained = wait_all_final(db, expected.ids(), timeout=60)
        checked = check_invariants(db, expected)
        cut = fleet.logs().count("workflow activations failed")
        print(
            f"postgres restart during activations: {cut} activations cut off, all final "
            f"{drained:.1f} s after the restart; {checked}"
        )
        assert cut, "the stop landed in no activation: nothing was tested"
        assert all(w.alive() for w in workers)
        assert set(fleet.stop_all().values()) == {0}
    db.close()


@pytest.mark.timeout(300)
def test_sigkill_and_postgres_restart_mid_run_lose_nothing(
    own_server: tuple[LocalCluster, str], tmp_path: Path, chaos_seed: int
) -> None:
    cluster, dsn = own_server
    rng = random.Random(chaos_seed)
    db = prepare(dsn)
    with fleet_of(dsn, tmp_path, db) as fleet:
        metrics_port = free_port()
        victim, survivor = fleet.start(), fleet.start("--metrics-port", str(metrics_port))
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
        assert (
            db.value(
                "SELECT count(*) FROM workflows.worker_heartbeats WHERE worker_id = %s",
                (victim.worker_id,),
            )
            == 0
        ), "the killed worker was never recovered"
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
        check_scrape(db, metrics_port, survivor)
        exits = fleet.stop_all()
        assert exits == {survivor.name: 0, joiner.name: 0}
        assert db.value("SELECT count(*) FROM workflows.worker_heartbeats") == 0
    db.close()
