"""Worker processes, a database connection that survives restarts, and the invariants.

Workers are real `currant worker` processes with short heartbeats, started from the repository
root so that they import ``tests.chaos.chaos_app`` by the path recorded at enqueue.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.chaos.chaos_app import QUEUE, SCHEMA_SQL

ROOT = Path(__file__).resolve().parents[2]
CURRANT = Path(sys.executable).parent / "currant"

HEARTBEAT_INTERVAL = 0.3
HEARTBEAT_TIMEOUT = 2.0
WORKER_ENV = {
    "WORKFLOWS_WORKER_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
    "WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    "WORKFLOWS_WORKER_POLL_INTERVAL": "0.2",
    "WORKFLOWS_RETRY_BACKOFF": "0.05",
    "WORKFLOWS_RETRY_BACKOFF_MAX": "0.5",
    "WORKFLOWS_WORKER_SHUTDOWN_GRACE": "5",
    "WORKFLOWS_WORKER_MAX_CONCURRENT": "8",
}
# A recovery takes the heartbeat timeout plus a beat or two, and up to a timeout more when
# every live worker started (or lost the database) less than a timeout ago: such a worker
# judges no peer yet. The rest is room for a loaded 2-core machine; a stuck recovery fails.
RECOVERY_BOUND = 2 * HEARTBEAT_TIMEOUT + 6.0
FINAL = ("completed", "failed", "cancelled")


class Db:
    """One autocommit connection, reopened when the server went away (a restart)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def rows(self, sql: str, params: Sequence[Any] = (), *, retry_for: float = 60) -> list[Any]:
        end = time.monotonic() + retry_for
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self.dsn, autocommit=True, row_factory=dict_row, connect_timeout=5
                    )
                cursor = self._conn.execute(sql.encode(), params)  # type: ignore[arg-type]
                return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError:
                self.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.rows(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def prepare(dsn: str) -> Db:
    """A connection to a migrated database, with the app's side-effect tables added."""
    db = Db(dsn)
    db.rows(SCHEMA_SQL)
    return db


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    worker_id: str | None = None
    killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> float:
        os.kill(self.pid, signal.SIGKILL)
        self.killed_at = time.monotonic()
        self.proc.wait(10)
        return self.killed_at

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def terminate(self, timeout: float = 30, *, signalled: bool = False) -> int:
        if not signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Fleet:
    """Starts, tracks and finally stops worker processes serving the chaos queue."""

    def __init__(self, dsn: str, log_dir: Path, db: Db, **env: str) -> None:
        self.dsn = dsn
        self.log_dir = log_dir
        self.db = db
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
        self.env.update(WORKER_ENV)
        self.env.update(env)
        self.env["WORKFLOWS_DATABASE_URL"] = dsn
        self.workers: list[WorkerProcess] = []

    def start(self, *args: str, **env: str) -> WorkerProcess:
        """A new worker process (``args`` go to `currant worker`); it registers shortly."""
        name = f"w{len(self.workers) + 1}"
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(CURRANT), "worker", "-q", QUEUE, "--log-level", "INFO", *args],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(name, proc, log_path)
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def ready(self) -> list[WorkerProcess]:
        """Live workers that have registered (their id is known)."""
        waiting = [w for w in self.live() if w.worker_id is None]
        if waiting:
            rows = self.db.rows(
                "SELECT worker_id::text AS id, pid FROM workflows.worker_heartbeats "
                "WHERE pid = ANY(%s)",
                ([w.pid for w in waiting],),
            )
            by_pid = {r["pid"]: r["id"] for r in rows}
            for w in waiting:
                w.worker_id = by_pid.get(w.pid)
        return [w for w in self.live() if w.worker_id is not None]

    def wait_ready(self, *workers: WorkerProcess, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while True:
            ready = self.ready()
            if all(w in ready for w in workers):
                return
            for w in workers:
                if not w.alive():
                    raise AssertionError(f"{w.name} exited {w.proc.returncode}:\n{w.log()[-3000:]}")
            if time.monotonic() > end:
                raise AssertionError(f"workers not registered after {timeout} s")
            time.sleep(0.05)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every live worker; their exit codes."""
        live = self.live()
        # One still importing has no signal handler yet and would die of the SIGTERM.
        self.wait_ready(*live)
        for w in live:
            w.proc.send_signal(signal.SIGTERM)
        # Once: a second SIGTERM could land after the handler is gone, during the exit.
        return {w.name: w.terminate(signalled=True) for w in live}

    def kill_all(self) -> None:
        for w in self.live():
            with contextlib.suppress(ProcessLookupError):
                w.resume()
            w.proc.kill()
            w.proc.wait(10)

    def logs(self) -> str:
        return "\n".join(f"==== {w.name}\n{w.log()}" for w in self.workers)


@contextlib.contextmanager
def fleet_of(dsn: str, log_dir: Path, db: Db, **env: str) -> Iterator[Fleet]:
    """A fleet whose processes are all gone afterwards, with its logs printed if it failed."""
    fleet = Fleet(dsn, log_dir, db, **env)
    try:
        yield fleet
    except BaseException:
        tails = "\n".join(f"==== {w.name}\n{w.log()[-4000:]}" for w in fleet.workers)
        print(f"worker logs (tails; full logs in {log_dir}):\n{tails}")
        raise
    finally:
        fleet.kill_all()


# ---- what the workload expects -------------------------------------------------------------


@dataclass
class Expected:
    """Executions the test enqueued, and what each must end with."""

    jobs: dict[str, str] = field(default_factory=dict)  # id -> side-effect key
    workflows: dict[str, str] = field(default_factory=dict)  # id -> key
    steps: dict[str, int] = field(default_factory=dict)  # workflow id -> activity count
    signals: dict[str, Any] = field(default_factory=dict)  # workflow id -> payload sent

    def ids(self) -> list[str]:
        return [*self.jobs, *self.workflows]


def wait_for(db: Db, sql: str, params: Sequence[Any], what: str, timeout: float = 30) -> None:
    """Poll until ``sql`` gives something true."""
    end = time.monotonic() + timeout
    while not db.value(sql, params):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def unfinished(db: Db, ids: Sequence[str]) -> int:
    return int(
        db.value(
            "SELECT count(*) FROM workflows.executions "
            "WHERE (id = ANY(%s::uuid[]) OR parent_id = ANY(%s::uuid[])) "
            "AND status NOT IN ('completed', 'failed', 'cancelled')",
            (list(ids), list(ids)),
        )
    )


def wait_all_final(db: Db, ids: Sequence[str], timeout: float) -> float:
    """Seconds it took until every execution (and every step it started) was final."""
    start = time.monotonic()
    while unfinished(db, ids):
        if time.monotonic() - start > timeout:
            stuck = db.rows(
                "SELECT id::text, kind, name, status, attempts, worker_id::text FROM "
                "workflows.executions WHERE status NOT IN ('completed', 'failed', 'cancelled') "
                "ORDER BY kind, status LIMIT 20"
            )
            raise AssertionError(f"not final after {timeout} s: {stuck}")
        time.sleep(0.1)
    return time.monotonic() - start


@dataclass
class Checked:
    executions: int
    side_effects: int
    repeated_side_effects: int  # keys whose effect happened more than once
    rerun_executions: int  # jobs/activities claimed more than once


def check_invariants(db: Db, expected: Expected) -> Checked:
    """Every invariant the issue names, over everything ``expected`` enqueued."""
    ids = expected.ids()
    rows = db.rows(
        "SELECT id::text AS id, kind, status, attempts, result::text AS result, "
        "error::text AS error, parent_id::text AS parent_id, worker_id::text AS worker_id "
        "FROM workflows.executions WHERE id = ANY(%s::uuid[]) OR parent_id = ANY(%s::uuid[])",
        (ids, ids),
    )
    by_id = {r["id"]: r for r in rows}
    assert set(ids) <= set(by_id), "an enqueued execution vanished"
    # 1. Every execution reached a final status, and (with retries to spare) completed.
    not_done = [
        (r["id"], r["kind"], r["status"], r["error"]) for r in rows if r["status"] != "completed"
    ]
    assert not not_done, f"not completed: {not_done[:10]}"
    # 2. Nothing reached a final status twice (no workflow, job or activity completed twice).
    transitions = Counter(
        r["id"]
        for r in db.rows(
            "SELECT id::text AS id FROM chaos_final_transitions WHERE id = ANY(%s::uuid[])",
            (list(by_id),),
        )
    )
    twice = {i: n for i, n in transitions.items() if n != 1}
    assert not twice, f"final more than once: {twice}"
    assert set(transitions) == set(by_id), "a final status was reached without a transition"
    # 3. Nothing is left running, let alone on a worker that is gone.
    assert not [r for r in rows if r["status"] == "running"]
    effects: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    for r in db.rows("SELECT key, token FROM chaos_side_effects"):
        effects.setdefault(r["key"], set()).add(r["token"])
        counts[r["key"]] += 1
    # 4. Every job's side effect happened, and its result comes from one of those runs.
    for execution_id, key in expected.jobs.items():
        result = json.loads(by_id[execution_id]["result"])
        assert key in effects, f"job {key}: its side effect never happened"
        assert result["key"] == key and result["token"] in effects[key], f"job {key}: {result}"
    # 5. Every step result recorded is the one the workflow used, and came from a real run.
    recorded = db.rows(
        "SELECT workflow_id::text AS workflow_id, seq, kind, status, result::text AS result, "
        "execution_id::text AS execution_id FROM workflows.workflow_steps "
        "WHERE workflow_id = ANY(%s::uuid[]) ORDER BY workflow_id, seq",
        (list(expected.workflows),),
    )
    history: dict[str, list[Any]] = {}
    for r in recorded:
        history.setdefault(r["workflow_id"], []).append(r)
    for wf, key in expected.workflows.items():
        result = json.loads(by_id[wf]["result"])
        steps = [s for s in history.get(wf, []) if s["kind"] == "activity"]
        assert len(steps) == expected.steps[wf], f"workflow {key}: {len(steps)} activity steps"
        assert result["steps"] == [json.loads(s["result"]) for s in steps], f"workflow {key}"
        for i, (s, token) in enumerate(zip(steps, result["steps"], strict=True)):
            assert token in effects.get(f"{key}/{i}", set()), f"workflow {key} step {i}"
            activity = by_id[s["execution_id"]]
            assert json.loads(activity["result"]) == token, f"workflow {key} step {i} execution"
        if wf in expected.signals:
            assert result["signal"] == expected.signals[wf], f"workflow {key}: signal"
    keys = set(expected.jobs.values()) | {
        f"{key}/{i}" for wf, key in expected.workflows.items() for i in range(expected.steps[wf])
    }
    return Checked(
        executions=len(rows),
        side_effects=sum(counts[k] for k in keys),
        repeated_side_effects=sum(1 for k in keys if counts[k] > 1),
        rerun_executions=sum(1 for r in rows if r["kind"] != "workflow" and r["attempts"] > 1),
    )


def orphaned(db: Db, live_pids: Sequence[int]) -> list[Any]:
    """Executions running with no live worker process behind them."""
    return db.rows(
        "SELECT id::text AS id, kind, worker_id::text AS worker_id FROM workflows.executions e "
        "WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM workflows.worker_heartbeats h "
        "WHERE h.worker_id = e.worker_id AND h.pid = ANY(%s))",
        (list(live_pids),),
    )


def summary(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return (
        f"min {min(values):.2f} / median {statistics.median(values):.2f} / "
        f"max {max(values):.2f} s (n={len(values)})"
    )
