"""Code that will not give its worker back: plain-``def`` jobs hung past their timeout, and an
``async def`` job blocking the event loop.

A hung call keeps its thread (Python cannot stop one): the worker must count that slot as gone,
say so on ``/healthz`` and in its metrics, claim nothing it could only time out without
running, and still exit on SIGTERM. A job blocking the loop must not get its worker declared
dead by the peers (the heartbeat beats from a thread), so it runs once, and the worker names
the function that blocked it.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos import stuck_app
from tests.chaos.harness import WORKER_ENV, Db, Fleet, WorkerProcess, wait_for

T = TypeVar("T")

POLL_INTERVAL = float(WORKER_ENV["WORKFLOWS_WORKER_POLL_INTERVAL"])
SHUTDOWN_GRACE = 2.0
BLOCK_SECONDS = 6.0


def free_port() -> int:
    """A port nothing listens on now, on every interface (the metrics server binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


def until(check: Callable[[], T | None], what: str, timeout: float = 15) -> T:
    """Poll ``check`` until it returns something true; that value."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def get(port: int, path: str) -> tuple[int | None, str]:
    """Status and body of ``GET path`` on the worker's metrics port (None: nothing answered)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return None, ""


def metric(port: int, sample: str, **labels: str) -> float | None:
    """The value of one sample on ``/metrics``, None when the worker does not show it."""
    status, text = get(port, "/metrics")
    if status != 200:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def start_watched(fleet: Fleet, *args: str, **env: str) -> tuple[WorkerProcess, int]:
    """A worker with a metrics port, registered and answering healthy."""
    port = free_port()
    worker = fleet.start("-A", stuck_app.__name__, "--metrics-port", str(port), *args, **env)
    fleet.wait_ready(worker)
    until(lambda: get(port, "/healthz")[0] == 200, f"{worker.name} to answer healthy")
    return worker, port


def starts(runs: Path, function: str) -> list[int]:
    """Pids of the processes in which ``function`` started, once per start."""
    if not runs.exists():
        return []
    lines = [line.split() for line in runs.read_text().splitlines()]
    return [int(pid) for name, _key, pid in lines if name == function]


def execution(db: Db, execution_id: str) -> dict[str, Any]:
    rows = db.rows(
        "SELECT status, attempts, result, error FROM workflows.executions WHERE id = %s",
        (execution_id,),
    )
    assert rows, f"execution {execution_id} vanished"
    row: dict[str, Any] = rows[0]
    return row


@pytest.mark.timeout(90)
def test_hung_sync_jobs_exhaust_only_their_threads_and_sigterm_still_ends_the_worker(
    fleet: Fleet, chaos_db: Db, tmp_path: Path
) -> None:
    db = chaos_db
    runs = tmp_path / "runs"
    env = {
        stuck_app.RUNS_FILE_ENV: str(runs),
        "WORKFLOWS_WORKER_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
    }
    worker, port = start_watched(fleet, "-c", "2", **env)

    hung = [stuck_app.hang.queue_sync(f"hang-{i}") for i in range(2)]
    wait_for(
        db,
        "SELECT count(*) = 2 FROM workflows.executions WHERE id = ANY(%s::uuid[]) "
        "AND status = 'failed'",
        (hung,),
        "both hung jobs to fail on their timeout",
    )
    for execution_id in hung:
        row = execution(db, execution_id)
        assert row["attempts"] == 1, row
        assert row["error"]["type"] == "TimeoutError", row
        assert f"timed out after {stuck_app.HANG_TIMEOUT} s" in row["error"]["message"], row
    # Both really ran (each on a thread of its own), and both still hold their thread.
    assert starts(runs, "hang") == [worker.pid, worker.pid]
    until(lambda: get(port, "/healthz")[0] == 503, "/healthz to answer 503 with every thread stuck")
    until(
        lambda: metric(port, "workflows_sync_threads_stuck") == 2,
        "workflows_sync_threads_stuck to read 2",
    )

    # No thread is left to run it: the worker must leave it pending, not claim it only to
    # time it out unrun (what a shared executor's queue did), nor run it late.
    quick = stuck_app.quick.queue_sync("quick")
    held_until = time.monotonic() + 5 * POLL_INTERVAL
    while time.monotonic() < held_until:
        assert not starts(runs, "quick"), "the quick job started on a worker with no thread free"
        # Not even handed over: a worker with no thread free offers itself to no enqueue.
        assert execution(db, quick)["status"] == "pending", execution(db, quick)
        time.sleep(0.05)
    row = execution(db, quick)
    assert (row["status"], row["attempts"]) == ("pending", 0), row
    assert db.value("SELECT releases FROM workflows.executions WHERE id = %s", (quick,)) == 0
    assert not starts(runs, "quick")
    assert worker.alive()
    assert get(port, "/healthz")[0] == 503

    # Stuck threads are daemons: they must not hold the process past its grace.
    signalled = time.monotonic()
    returncode = worker.terminate(timeout=SHUTDOWN_GRACE + 5)
    took = time.monotonic() - signalled
    assert returncode == 0, f"exit {returncode} after {took:.1f} s:\n{worker.log()[-3000:]}"
    row = execution(db, quick)
    assert (row["status"], row["attempts"]) == ("pending", 0), row

    fresh, _ = start_watched(fleet, **env)
    wait_for(
        db,
        "SELECT status = 'completed' FROM workflows.executions WHERE id = %s",
        (quick,),
        "a fresh worker to run the quick job",
    )
    row = execution(db, quick)
    assert row["attempts"] == 1, row
    assert row["result"] == {"key": "quick", "pid": fresh.pid}
    assert starts(runs, "quick") == [fresh.pid]
    print(f"stuck: SIGTERM with 2 threads stuck ended the worker in {took:.2f} s")


@pytest.mark.timeout(90)
def test_a_job_blocking_the_event_loop_runs_once_and_is_reported(
    fleet: Fleet, chaos_db: Db, tmp_path: Path
) -> None:
    db = chaos_db
    runs = tmp_path / "runs"
    env = {
        stuck_app.RUNS_FILE_ENV: str(runs),
        # The loop stays blocked for three heartbeat timeouts: a heartbeat beaten on the loop
        # would get the worker declared dead and the job run again by its peer.
        "WORKFLOWS_WORKER_HEARTBEAT_INTERVAL": "0.5",
        "WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT": "2",
    }
    started = [start_watched(fleet, **env) for _ in range(2)]
    ports = {w.pid: port for w, port in started}
    workers = {w.pid: w for w, _ in started}

    job_id = stuck_app.block_loop.queue_sync("block", BLOCK_SECONDS)
    # /healthz of both workers while the job runs: the probe must see the blocked one.
    health: dict[int, Counter[int | None]] = {pid: Counter() for pid in workers}
    end = time.monotonic() + BLOCK_SECONDS + 15
    while execution(db, job_id)["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < end, f"job not final: {execution(db, job_id)}"
        for pid, port in ports.items():
            health[pid][get(port, "/healthz")[0]] += 1
        time.sleep(0.05)

    row = execution(db, job_id)
    ran_in = starts(runs, "block_loop")
    assert len(ran_in) == 1, f"the job ran {len(ran_in)} times, in {ran_in}: {row}"
    assert row["status"] in ("completed", "failed"), row
    assert row["error"] is None or row["error"]["type"] != "WorkerLost", row
    assert row["attempts"] == 1, row
    # No peer declared a worker dead, so no attempt was counted as lost with one.
    assert db.value("SELECT count(*) FROM chaos_heartbeat_deletes") == 0
    assert db.value("SELECT count(*) FROM chaos_lost_attempts") == 0

    runner = workers[ran_in[0]]
    port = ports[runner.pid]
    assert health[runner.pid][503] >= 1, f"/healthz of the blocked worker: {health[runner.pid]}"
    name = stuck_app.block_loop.path
    warning = until(
        lambda: next(
            (line for line in runner.log().splitlines() if "event loop blocked for" in line),
            None,
        ),
        "the blocked worker to log the block",
        timeout=5,
    )
    assert f" by {name} (" in warning, warning
    blocked = metric(port, "workflows_event_loop_blocked_total", name=name)
    assert blocked is not None and blocked >= 1, f"workflows_event_loop_blocked_total: {blocked}"
    # Once the loop runs again, the worker answers healthy again.
    until(lambda: get(port, "/healthz")[0] == 200, "the unblocked worker to answer healthy")
    assert all(w.alive() for w in workers.values())
    print(f"blocked loop: /healthz answers of the runner {dict(health[runner.pid])}")
