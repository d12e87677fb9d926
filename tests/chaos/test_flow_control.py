"""Flow control with a fleet of real worker processes: limits hold across processes.

Three `currant worker` processes serve the chaos queue (and another). Every job run records
its start and end in ``flow_runs`` (``tests.chaos.flow_app``), so what ran at once is counted
from what really ran, not from what the database says:

- a queue limited to 2 never has more than 2 runs at once, also when a worker is SIGKILLed in
  the middle of one: its run ran until the kill, and its slot stays taken until the run is
  recovered (the recovery is noted by a trigger), so even counting the dead run as running
  until then, no third one ran;
- per-key limits: 50 customers, 4 runs each, never two of one customer at once, each
  customer's in the order enqueued, different customers in parallel; a key of limit 2 too;
- a rate of 20/s (a shared rate key across two queues, and a queue's own rate): no 1 s
  window, sliding over the admission times (``started_at``), holds more than 20 starts, and
  a start the window held back comes soon after the window has room (the workers poll only
  every 2 s here, so a worker that waited for its poll would show);
- a paused queue starts nothing while the workers run work of another queue, lets what runs
  finish, and runs everything after the resume.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.chaos import flow_app
from tests.chaos.chaos_app import QUEUE
from tests.chaos.harness import Db, Fleet, WorkerProcess, wait_all_final, wait_for
from workflows import queues, rate_limits

BOTH = ("-q", flow_app.OTHER_QUEUE)


def prepare(db: Db) -> None:
    db.rows(flow_app.SCHEMA_SQL)


def start_fleet(fleet: Fleet, *args: str, count: int = 3) -> list[WorkerProcess]:
    workers = [fleet.start(*args) for _ in range(count)]
    fleet.wait_ready(*workers)
    return workers


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The most half-open intervals [start, end) that hold one instant."""
    events = []
    for start, end in intervals:
        assert start <= end, (start, end)
        events += [(start, 1), (end, -1)]
    # At equal times ends go first: [a, b) and [b, c) do not overlap.
    events.sort(key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def max_in_window(times: Sequence[datetime], width: timedelta) -> int:
    """The most of ``times`` in any half-open window [t, t + width): one starts at a time."""
    ordered = sorted(times)
    most = 0
    j = 0
    for i, t in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < t + width:
            j += 1
        most = max(most, j - i)
    return most


def runs(db: Db) -> list[dict[str, Any]]:
    return db.rows("SELECT tag, key, pid, started, ended FROM flow_runs ORDER BY started, run")


def executions(db: Db, ids: Iterable[str]) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT id::text AS id, queue, status, attempts, started_at, result "
        "FROM workflows.executions WHERE id = ANY(%s::uuid[]) ORDER BY started_at",
        (list(ids),),
    )


def all_completed(db: Db, ids: Sequence[str], timeout: float) -> float:
    took = wait_all_final(db, ids, timeout)
    rows = executions(db, ids)
    assert len(rows) == len(ids)
    bad = [(r["id"], r["status"]) for r in rows if r["status"] != "completed"]
    assert not bad, bad
    return took


def clock(db: Db) -> datetime:
    value: datetime = db.value("SELECT clock_timestamp()")
    return value


# ---- global concurrency --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_queue_limit_of_two_holds_across_three_workers_and_a_sigkill(
    fleet: Fleet, chaos_db: Db
) -> None:
    db = chaos_db
    prepare(db)
    started = time.monotonic()
    # One slot per process: reaching 2 at once takes two processes (a worker that frees a
    # slot of a limited queue claims it straight back, so with more slots one could hold
    # both), and a limit counted per process would let all three run.
    workers = start_fleet(fleet, "-c", "1")
    assert queues.set_limit_sync(QUEUE, concurrency=2)["concurrency"] == 2
    tags = {flow_app.span.queue_sync(f"g{i}", 0.25): f"g{i}" for i in range(40)}

    # A victim in the middle of a recorded run, every run it holds recorded.
    by_pid = {w.pid: w for w in workers}
    end = time.monotonic() + 30
    victim: WorkerProcess | None = None
    while victim is None:
        assert time.monotonic() < end, "no worker was seen running a job"
        rows = db.rows(
            "SELECT h.pid, count(*) AS running, (SELECT count(*) FROM flow_runs r "
            "WHERE r.pid = h.pid AND r.ended IS NULL) AS recorded "
            "FROM workflows.executions e JOIN workflows.worker_heartbeats h USING (worker_id) "
            "WHERE e.status = 'running' GROUP BY h.pid"
        )
        ready = [r for r in rows if r["recorded"] >= 1 and r["recorded"] == r["running"]]
        if ready:
            victim = by_pid[ready[0]["pid"]]
        else:
            time.sleep(0.005)
    victim.kill()
    killed_at = clock(db)
    in_flight = db.value(
        "SELECT count(*) FROM flow_runs WHERE pid = %s AND ended IS NULL", (victim.pid,)
    )
    assert in_flight >= 1

    took = all_completed(db, list(tags), timeout=90)
    recorded = runs(db)
    exec_of = {tag: execution_id for execution_id, tag in tags.items()}
    # When each run the kill cut short gave its slot back: its execution left 'running' on
    # the dead worker (the recovery).
    recovered = {
        r["id"]: r["at"]
        for r in db.rows(
            "SELECT id::text AS id, at FROM flow_left_running WHERE worker_id = %s::uuid "
            "AND status = 'pending'",
            (victim.worker_id,),
        )
    }
    cut = [r for r in recorded if r["ended"] is None]
    assert cut, "the killed worker left no run unfinished"
    assert all(r["pid"] == victim.pid for r in cut), cut
    assert len(cut) == in_flight
    for r in cut:
        assert exec_of[r["tag"]] in recovered, f"{r['tag']} was never recovered"
        assert recovered[exec_of[r["tag"]]] >= killed_at

    # What really ran: a killed run ran until the kill.
    ran = [(r["started"], r["ended"] or killed_at) for r in recorded]
    # What held a slot: a killed run until its recovery.
    held = [(r["started"], r["ended"] or recovered[exec_of[r["tag"]]]) for r in recorded]
    assert max_overlap(ran) == 2, "the limit was exceeded, or never reached"
    assert max_overlap(held) <= 2, "a run started while a dead worker's run held its slot"
    # Between the kill and the recovery one slot was the dead run's: one run at a time then.
    first_recovery = min(recovered[exec_of[r["tag"]]] for r in cut)
    during = [
        (max(s, killed_at), min(e, first_recovery))
        for s, e in ran
        if s < first_recovery and e > killed_at
    ]
    assert max_overlap(during) <= 2 - len(cut)

    # Every job ran to its end once, again only if the kill cut it; two processes at once.
    finished = defaultdict(int)
    for r in recorded:
        if r["ended"] is not None:
            finished[r["tag"]] += 1
    assert sorted(finished) == sorted(tags.values())
    assert set(finished.values()) == {1}
    rows = executions(db, tags)
    assert {tags[r["id"]] for r in rows if r["attempts"] > 1} == {r["tag"] for r in cut}
    pairs = [
        (a, b)
        for a, b in itertools.combinations(recorded, 2)
        if a["pid"] != b["pid"]
        and a["started"] < (b["ended"] or killed_at)
        and b["started"] < (a["ended"] or killed_at)
    ]
    assert pairs, "no two processes ever ran at once: the limit was not shared"
    info = queues.get_sync(QUEUE)
    assert (info["running"], info["pending"], info["held"]) == (0, 0, 0), info
    print(
        f"queue limit 2: {len(tags)} jobs on 3 processes, max 2 at once (from their records); "
        f"{len(cut)} run(s) killed, slot given back "
        f"{(first_recovery - killed_at).total_seconds():.2f} s after the kill; drained in "
        f"{took:.1f} s; {time.monotonic() - started:.1f} s"
    )


# ---- per-key concurrency --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_per_key_limits_over_50_keys_across_three_workers(fleet: Fleet, chaos_db: Db) -> None:
    db = chaos_db
    prepare(db)
    started = time.monotonic()
    start_fleet(fleet)
    customers, rounds = 50, 4
    order: dict[str, list[str]] = defaultdict(list)  # key -> tags, in enqueue order
    ids = []
    for n in range(rounds):
        for c in range(customers):
            tag = f"c{c}-{n}"
            ids.append(flow_app.per_customer.queue_sync(c, tag, 0.1))
            order[f"customer:{c}"].append(tag)
    # A key of limit 2, given per call.
    pair = flow_app.span.options(concurrency_key="pair", concurrency_limit=2)
    ids += [pair.queue_sync(f"pair-{n}", 0.2) for n in range(8)]

    took = all_completed(db, ids, timeout=60)
    recorded = runs(db)
    assert len(recorded) == len(ids), "a run happened twice, or not at all"
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recorded:
        by_key[r["key"] or r["tag"].split("-")[0]].append(r)
    assert set(order) | {"pair"} == set(by_key)
    for key, key_runs in order.items():
        spans = [(r["started"], r["ended"]) for r in by_key[key]]
        assert max_overlap(spans) == 1, f"two runs of {key} at once: {by_key[key]}"
        # FIFO within the key (one priority): they started in the order enqueued.
        assert [r["tag"] for r in by_key[key]] == key_runs, key
    assert max_overlap((r["started"], r["ended"]) for r in by_key["pair"]) == 2
    # Different keys ran side by side, on every process.
    overall = max_overlap((r["started"], r["ended"]) for r in recorded)
    assert overall >= 6, f"at most {overall} runs at once: keys held each other back"
    assert len({r["pid"] for r in recorded}) == 3
    # Every slot given back, nothing left held.
    assert db.value("SELECT COALESCE(sum(active), 0) FROM workflows.concurrency_keys") == 0
    assert db.value("SELECT count(*) FROM workflows.executions WHERE held") == 0
    print(
        f"per-key: {customers} keys x {rounds} runs + a key of limit 2 on 3 processes: "
        f"one per key at a time, in enqueue order, up to {overall} keys at once; drained in "
        f"{took:.1f} s; {time.monotonic() - started:.1f} s"
    )


# ---- rates ----------------------------------------------------------------------------------

RATE = 20
RATE_JOBS = 100
# Longer than any wait the rate imposes on a start here, so that a start freed by the window
# and taken only at the next poll shows up as a lag of the order of a second.
RATE_POLL = "2"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("limiter", ["rate-key", "queue-rate"])
def test_rate_of_20_per_second_in_every_sliding_window(
    fleet: Fleet, chaos_db: Db, limiter: str
) -> None:
    db = chaos_db
    prepare(db)
    started = time.monotonic()
    workers = [fleet.start(*BOTH, WORKFLOWS_WORKER_POLL_INTERVAL=RATE_POLL) for _ in range(3)]
    fleet.wait_ready(*workers)
    ids = []
    if limiter == "rate-key":
        # One rate across two queues.
        rate_limits.set_sync("api:x", f"{RATE}/s")
        for i in range(RATE_JOBS // 2):
            ids.append(flow_app.call_api.queue_sync(f"a{i}"))
            ids.append(flow_app.call_api_other.queue_sync(f"b{i}"))
    else:
        queues.set_limit_sync(QUEUE, rate=f"{RATE}/s")
        ids = [flow_app.span.queue_sync(f"s{i}", 0.0) for i in range(RATE_JOBS)]
        # The other queue is not limited by it: its jobs go at once, whatever the backlog.
        other = [flow_app.other_span.queue_sync(f"o{i}", 0.0) for i in range(20)]

    took = all_completed(db, ids, timeout=60)
    rows = executions(db, ids)
    starts = [r["started_at"] for r in rows]
    assert all(r["attempts"] == 1 for r in rows)
    if limiter == "rate-key":
        assert {r["queue"] for r in rows} == {QUEUE, flow_app.OTHER_QUEUE}
    else:
        other_rows = executions(db, other)
        assert all(r["status"] == "completed" for r in other_rows)
        # Done long before the rate let the backlog through.
        assert max(r["started_at"] for r in other_rows) < starts[0] + timedelta(seconds=2)
    second = timedelta(seconds=1)
    most = max_in_window(starts, second)
    assert most <= RATE, f"{most} starts in one second"
    # Close to the rate: the backlog was never idle for long. A start may come no sooner than
    # its job was enqueued, nor than a second after the start RATE before it (the window must
    # have room); its lag is how much later it came. A worker that learned of the room only
    # at its next poll would lag about a second on every start the window held back.
    created = db.rows(
        "SELECT id::text AS id, created_at FROM workflows.executions WHERE id = ANY(%s::uuid[])",
        (ids,),
    )
    created_at = {r["id"]: r["created_at"] for r in created}
    lags = []
    for k in range(RATE, len(rows)):
        earliest = max(created_at[rows[k]["id"]], starts[k - RATE] + second)
        lags.append((starts[k] - earliest).total_seconds())
    assert min(lags) >= 0  # implied by the windows, said outright
    mean_lag = sum(lags) / len(lags)
    assert mean_lag < 0.12, f"{mean_lag:.3f} s after the window had room, on average"
    span = (starts[-1] - starts[0]).total_seconds()
    full = [
        sum(1 for t in starts if starts[0] + k * second <= t < starts[0] + (k + 1) * second)
        for k in range(int(span))
    ]
    # The jobs' own records: later than their admission by the pickup, so a window of them
    # can hold a few more; printed, not asserted.
    admitted = {r["result"]["tag"]: r["started_at"] for r in rows}
    recorded = [r for r in runs(db) if r["tag"] in admitted]
    assert len(recorded) == RATE_JOBS
    # started_at is the admission: no run began before it.
    assert all(r["started"] >= admitted[r["tag"]] for r in recorded)
    pickup = max((r["started"] - admitted[r["tag"]]).total_seconds() for r in recorded)
    by_records = max_in_window([r["started"] for r in recorded], second)
    print(
        f"{limiter} {RATE}/s: {RATE_JOBS} starts over {span:.2f} s; a start held back by the "
        f"window came {mean_lag * 1000:.0f} ms after it had room on average "
        f"({max(lags) * 1000:.0f} ms at most); at most {most} in any 1 s window "
        f"(admission times), {by_records} by the jobs' records (pickup up to {pickup:.3f} s); "
        f"per second {full}; drained in {took:.1f} s; {time.monotonic() - started:.1f} s"
    )


# ---- pause / resume -------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_pause_starts_nothing_and_resume_runs_everything(fleet: Fleet, chaos_db: Db) -> None:
    db = chaos_db
    prepare(db)
    started = time.monotonic()
    # Two slots per process: a backlog stays pending while the first runs go.
    start_fleet(fleet, *BOTH, "-c", "2")
    ids = [flow_app.span.queue_sync(f"p{i}", 0.3) for i in range(30)]
    wait_for(db, "SELECT count(*) >= 3 FROM flow_runs", (), "the first runs")

    info = queues.pause_sync(QUEUE)
    paused_at = clock(db)
    assert info["paused"] is True
    # Enqueued while paused, with idle slots about: no route may start them either.
    ids += [flow_app.span.queue_sync(f"q{i}", 0.05) for i in range(10)]
    # The workers are awake and claiming: other work runs, what ran at the pause finishes.
    sentinels = [flow_app.other_span.queue_sync(f"o{i}", 0.05) for i in range(12)]
    all_completed(db, sentinels, timeout=30)
    wait_for(
        db,
        "SELECT count(*) = 0 FROM workflows.executions WHERE queue = %s AND status = 'running'",
        (QUEUE,),
        "the runs of the paused queue to finish",
    )
    # Every run admitted before the pause has now ended (one admitted just before it may have
    # begun just after it): from here until the resume, no run may begin.
    quiet_at = clock(db)
    # Once more after what ran finished (its slots went to claims that must skip the queue).
    ids_late = [flow_app.other_span.queue_sync(f"late{i}", 0.01) for i in range(6)]
    all_completed(db, ids_late, timeout=30)
    late_starts = db.rows(
        "SELECT id::text AS id, started_at FROM workflows.executions "
        "WHERE queue = %s AND started_at > %s",
        (QUEUE, paused_at),
    )
    assert not late_starts, f"started while paused: {late_starts}"
    info = queues.get_sync(QUEUE)
    pending = db.value(
        "SELECT count(*) FROM workflows.executions WHERE queue = %s AND status = 'pending'",
        (QUEUE,),
    )
    assert info["paused"] is True and info["running"] == 0 and info["pending"] == pending
    assert pending >= 10, pending  # at least those enqueued during the pause
    ran_before = len(ids) - pending

    resumed_at = clock(db)
    assert queues.resume_sync(QUEUE)["paused"] is False
    took = all_completed(db, ids, timeout=60)
    rows = executions(db, ids)
    assert all(r["status"] == "completed" for r in rows)
    # What ran, by the jobs' own records (started_at is the first admission, and a job handed
    # to a worker that had just filled up goes back to pending keeping it): each ran once,
    # none after what was running at the pause had ended, and the ones pending at the resume
    # ran after it.
    recorded = [r for r in runs(db) if r["tag"][0] in "pq"]
    assert sorted(r["tag"] for r in recorded) == sorted(
        [f"p{i}" for i in range(30)] + [f"q{i}" for i in range(10)]
    )
    assert all(r["started"] <= quiet_at or r["started"] >= resumed_at for r in recorded)
    assert len([r for r in recorded if r["started"] >= resumed_at]) == pending
    print(
        f"pause: {ran_before} started before the pause, {pending} held back while 18 jobs of "
        f"another queue ran, all done {took:.1f} s after the resume; "
        f"{time.monotonic() - started:.1f} s"
    )
