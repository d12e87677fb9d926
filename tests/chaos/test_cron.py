"""Cron with a fleet of real worker processes: each tick runs exactly once.

Three `currant worker` processes import ``tests.chaos.cron_app``, whose job is scheduled every
second, and fire its ticks. Meanwhile one worker is SIGKILLed in the middle of a run and
started again, another is stopped and started again (each registers the schedule anew), and
the schedule is paused, then resumed. Then, from the database and from the job's own records:

- every tick has one execution, and every second from the first tick to the pause has its
  tick, and so has every second from the first tick after the resume to the last: no tick was
  lost while a worker died, none ran twice;
- no tick fell in the pause, and none of the ticks it skipped fired on the resume;
- every execution completed, its result naming a run the job recorded; the job ran more than
  once only for executions whose worker was killed during the run.

The test imports nothing from ``cron_app``: a scheduled function in this process's registry
would be registered by any in-process worker another test starts.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from tests.chaos.harness import Db, Fleet, WorkerProcess, wait_all_final, wait_for
from workflows import schedules

NAME = "chaos-every-second"  # cron_app.NAME
APP = ("-A", "tests.chaos.cron_app")
SECOND = timedelta(seconds=1)


def ticks_fired(db: Db) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT id::text AS id, schedule_tick AS tick, status, attempts, "
        "result::text AS result, created_at FROM workflows.executions "
        "WHERE schedule_name = %s ORDER BY schedule_tick",
        (NAME,),
    )


def wait_ticks(db: Db, count: int, *, after: datetime | None = None, timeout: float = 20) -> None:
    wait_for(
        db,
        "SELECT count(*) >= %s FROM workflows.executions "
        "WHERE schedule_name = %s AND (%s::timestamptz IS NULL OR schedule_tick > %s)",
        (count, NAME, after, after),
        f"{count} ticks" + (f" after {after}" if after else ""),
        timeout,
    )


def running_a_tick(fleet: Fleet, db: Db, timeout: float = 20) -> WorkerProcess:
    """A live worker in the middle of a tick's run."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        live = {w.worker_id: w for w in fleet.ready()}
        rows = db.rows(
            "SELECT worker_id::text AS worker_id FROM workflows.executions "
            "WHERE schedule_name = %s AND status = 'running' AND worker_id = ANY(%s::uuid[])",
            (NAME, list(live)),
        )
        if rows:
            return live[rows[0]["worker_id"]]
        time.sleep(0.01)
    raise AssertionError("no worker ran a tick")


def contiguous(ticks: list[datetime]) -> bool:
    return all(b - a == SECOND for a, b in itertools.pairwise(ticks))


def test_three_workers_run_each_tick_once_through_kills_restarts_and_a_pause(
    fleet: Fleet, chaos_db: Db
) -> None:
    db = chaos_db
    started = time.monotonic()
    workers = [fleet.start(*APP) for _ in range(3)]
    fleet.wait_ready(*workers)
    wait_ticks(db, 3)

    # SIGKILL in the middle of a run, and a new process in its place.
    killed = running_a_tick(fleet, db)
    killed_tick = db.value(
        "SELECT schedule_tick FROM workflows.executions WHERE schedule_name = %s "
        "AND status = 'running' AND worker_id = %s::uuid",
        (NAME, killed.worker_id),
    )
    killed.kill()
    replacement = fleet.start(*APP)
    # A clean restart of another: it registers the schedule again as it starts.
    stopped = next(w for w in fleet.ready() if w is not killed)
    assert stopped.terminate() == 0
    restarted = fleet.start(*APP)
    fleet.wait_ready(replacement, restarted)
    count = len(ticks_fired(db))
    wait_ticks(db, count + 4)

    schedules.pause_sync(NAME)
    paused_at: datetime = db.value("SELECT clock_timestamp()")
    # Three ticks' worth of waiting for none to fire: the absence is what is measured.
    time.sleep(3.0)
    resumed_at: datetime = db.value("SELECT clock_timestamp()")
    schedules.resume_sync(NAME)
    wait_ticks(db, 3, after=resumed_at)

    exits = fleet.stop_all()
    assert all(code == 0 for code in exits.values()), exits
    fired = ticks_fired(db)
    wait_all_final(db, [r["id"] for r in fired], timeout=60)
    fired = ticks_fired(db)

    # From the database: one execution per tick, every second, none in the pause.
    ticks = [r["tick"] for r in fired]
    assert len(ticks) == len(set(ticks))
    before = [t for t in ticks if t <= paused_at]
    after = [t for t in ticks if t > paused_at]
    assert contiguous(before), before
    assert contiguous(after), after
    assert after[0] > resumed_at, f"a tick of the pause fired: {after[0]} (resumed {resumed_at})"
    assert after[0] - resumed_at <= timedelta(seconds=3), "resumed late"
    assert killed_tick in before
    created_in_pause = [
        r for r in fired if paused_at < r["created_at"] < resumed_at and r["tick"] > paused_at
    ]
    assert not created_in_pause

    # From the job's own records: every execution's result is a run it recorded, once; runs
    # beyond one per tick only for executions whose attempt a killed worker lost.
    assert all(r["status"] == "completed" for r in fired), [r for r in fired if r["status"]]
    records = Counter(
        r["token"] for r in db.rows("SELECT token FROM chaos_side_effects WHERE key = %s", (NAME,))
    )
    results = [json.loads(r["result"])["token"] for r in fired]
    assert all(records[token] == 1 for token in results)
    extra = sum(records.values()) - len(results)
    retried = sum(r["attempts"] - 1 for r in fired)
    assert 0 <= extra <= retried, (extra, retried)
    assert next(r for r in fired if r["tick"] == killed_tick)["attempts"] >= 2

    print(
        f"cron: {len(ticks)} ticks by {len(fleet.workers)} worker processes, each run once; "
        f"{extra} run(s) lost with the killed worker and run again; first tick "
        f"{(after[0] - resumed_at).total_seconds():.2f} s after the resume; "
        f"{time.monotonic() - started:.1f} s"
    )
