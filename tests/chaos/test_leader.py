"""The fleet's maintenance runs on one elected worker; killed, it is replaced within a timeout.

Three real worker processes stand for the lead every heartbeat interval. The test finds the
leader in ``leader_terms``, SIGKILLs it while it runs jobs and while a workflow's timer is still
to come, and checks that a peer begins a new term within one heartbeat timeout of the kill,
that this new leader recovers the dead worker's jobs and fires the timer, and that no two terms
ever overlapped.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta
from typing import Any

from tests.chaos import chaos_app, leader_app
from tests.chaos.harness import Db, Fleet, wait_all_final

INTERVAL = 0.5
TIMEOUT = 3.0
ENV = {
    "WORKFLOWS_WORKER_HEARTBEAT_INTERVAL": str(INTERVAL),
    "WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT": str(TIMEOUT),
    # Two slots each: six jobs put two on every worker, the leader included.
    "WORKFLOWS_WORKER_MAX_CONCURRENT": "2",
}
# A recovery waits for the dead worker's heartbeat to be a timeout old, and up to a timeout
# more while the new leader's own beats are not yet steady; the rest is room for a loaded
# machine.
RECOVERY_BOUND = 2 * TIMEOUT + 6.0


def poll(db: Db, sql: str, params: tuple[Any, ...], what: str, timeout: float) -> Any:
    """The first row ``sql`` returns, polling until it returns one."""
    end = time.monotonic() + timeout
    while True:
        rows = db.rows(sql, params)
        if rows:
            return rows[0]
        assert time.monotonic() < end, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def current_term(db: Db, after: int = 0, timeout: float = 30) -> Any:
    return poll(
        db,
        "SELECT term, worker_id::text AS worker_id, began_at, expires_at "
        "FROM workflows.leader_terms WHERE term > %s AND expires_at > clock_timestamp() "
        "ORDER BY term DESC LIMIT 1",
        (after,),
        f"a leader's term after term {after}",
        timeout,
    )


def test_a_killed_leader_is_replaced_within_a_timeout_and_its_successor_maintains(
    fleet: Fleet, chaos_db: Db
) -> None:
    db = chaos_db
    workers = [fleet.start(**ENV) for _ in range(3)]
    fleet.wait_ready(*workers)
    first = current_term(db)
    leader = next(w for w in workers if w.worker_id == first["worker_id"])

    # A timer that comes due after the kill: only a leader fires it.
    nap = leader_app.nap.queue_sync(6.0)
    timer = poll(
        db,
        "SELECT fire_at FROM workflows.workflow_steps "
        "WHERE workflow_id = %s AND kind = 'timer' AND status = 'scheduled'",
        (nap,),
        "the workflow's timer",
        30,
    )
    jobs = [chaos_app.work.queue_sync(f"leader-{n}", 6.0) for n in range(6)]
    on_leader = poll(
        db,
        "SELECT array_agg(id::text) AS ids FROM workflows.executions "
        "WHERE id = ANY(%s::uuid[]) AND status = 'running' AND worker_id = %s::uuid "
        "HAVING count(*) = 2",
        (jobs, leader.worker_id),
        "two jobs running on the leader",
        30,
    )["ids"]

    killed_at: datetime = db.value("SELECT clock_timestamp()")
    leader.kill()
    assert timer["fire_at"] > killed_at, "the timer came due before the kill: test too slow"
    assert (
        db.value(
            "SELECT status FROM workflows.workflow_steps WHERE workflow_id = %s AND kind = 'timer'",
            (nap,),
        )
        == "scheduled"
    )

    # A new term, of another worker, within one heartbeat timeout of the kill.
    second = current_term(db, after=first["term"], timeout=RECOVERY_BOUND)
    assert second["worker_id"] != leader.worker_id
    assert second["worker_id"] in {w.worker_id for w in fleet.live()}
    took = second["began_at"] - killed_at
    assert took <= timedelta(seconds=TIMEOUT), f"the next term began {took} after the kill"

    # The new leader recovers the dead worker: its heartbeat row goes and its jobs run again.
    gone = poll(
        db,
        "SELECT at FROM chaos_heartbeat_deletes WHERE worker_id = %s::uuid",
        (leader.worker_id,),
        "the dead leader's recovery",
        RECOVERY_BOUND,
    )["at"]
    assert gone >= second["began_at"]
    assert gone - killed_at <= timedelta(seconds=RECOVERY_BOUND)
    lost = {
        r["id"]
        for r in db.rows(
            "SELECT id::text AS id FROM chaos_lost_attempts WHERE id = ANY(%s::uuid[])",
            (on_leader,),
        )
    }
    assert lost == set(on_leader), "the dead leader's jobs were not recovered"

    # And it fires the timer once due.
    fired = poll(
        db,
        "SELECT resolved_at FROM workflows.workflow_steps "
        "WHERE workflow_id = %s AND kind = 'timer' AND status = 'completed'",
        (nap,),
        "the timer to fire",
        30,
    )["resolved_at"]
    assert fired >= second["began_at"]
    # Swept every poll interval (0.2 s): well within a second of coming due.
    late = fired - timer["fire_at"]
    assert late <= timedelta(seconds=2), f"the timer fired {late} late"

    print(
        f"leader: term {second['term']} began {took.total_seconds():.2f} s after the kill of "
        f"the leader of term {first['term']}; its jobs recovered "
        f"{(gone - killed_at).total_seconds():.2f} s after; the timer fired "
        f"{late.total_seconds():.2f} s after it came due"
    )
    wait_all_final(db, [nap, *jobs], timeout=60)
    assert db.value("SELECT result::text FROM workflows.executions WHERE id = %s", (nap,)) == (
        '"woke"'
    )
    assert fleet.stop_all() == {w.name: 0 for w in workers if w is not leader}

    # No two terms ever overlapped: each began once the one before had expired.
    terms = db.rows(
        "SELECT term, worker_id::text AS worker_id, began_at, renewed_at, expires_at "
        "FROM workflows.leader_terms ORDER BY term"
    )
    assert len(terms) >= 2
    assert [t["term"] for t in terms] == list(range(terms[0]["term"], terms[-1]["term"] + 1))
    for before, after in itertools.pairwise(terms):
        assert after["began_at"] >= before["expires_at"], (before, after)
    for t in terms:
        assert t["began_at"] <= t["renewed_at"] <= t["expires_at"], t
