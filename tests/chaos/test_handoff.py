"""Handoff under SIGKILL: an idle worker killed while its offer stands is handed nothing.

Its sessions end with the process, and with them the advisory lock an offer needs: the next
job goes to a live worker at once instead of waiting, claimed in a dead worker's name, for the
heartbeat timeout and a recovery.
"""

from __future__ import annotations

import pytest

from tests.chaos import chaos_app
from tests.chaos.harness import Db, Expected, Fleet, check_invariants, wait_for


@pytest.mark.timeout(120)
def test_an_idle_worker_killed_with_its_offer_standing_is_handed_nothing(
    fleet: Fleet, chaos_db: Db
) -> None:
    db = chaos_db
    victim, survivor = fleet.start(), fleet.start()
    fleet.wait_ready(victim, survivor)
    for w in (victim, survivor):
        wait_for(
            db,
            "SELECT count(*) FROM workflows.worker_offers WHERE worker_id = %s",
            (w.worker_id,),
            f"{w.name} to offer itself",
        )
    victim.kill()
    # As if renewed just before the kill: only the lock can tell the worker is gone.
    db.value(
        "UPDATE workflows.worker_offers SET expires_at = now() + interval '1 hour' "
        "WHERE worker_id = %s RETURNING 1",
        (victim.worker_id,),
    )
    key = db.value(
        "SELECT lock_key FROM workflows.worker_offers WHERE worker_id = %s", (victim.worker_id,)
    )
    # PostgreSQL ends the killed process's sessions as their sockets close; then the lock is free.
    wait_for(
        db,
        "SELECT pg_try_advisory_xact_lock_shared(%s)",
        (key,),
        "the killed worker's sessions to end",
    )

    ids = [chaos_app.work.queue_sync(f"after-kill-{i}", 0.0) for i in range(5)]
    for execution_id in ids:
        owner = db.value(
            "SELECT worker_id::text FROM workflows.executions WHERE id = %s", (execution_id,)
        )
        assert owner != victim.worker_id
    wait_for(
        db,
        "SELECT count(*) = %s FROM workflows.executions WHERE id = ANY(%s::uuid[]) "
        "AND status = 'completed'",
        (len(ids), ids),
        "the jobs to complete",
    )
    # Done by the survivor at the first attempt: none was lost with the victim.
    rows = db.rows(
        "SELECT attempts, result FROM workflows.executions WHERE id = ANY(%s::uuid[])", (ids,)
    )
    assert all(r["attempts"] == 1 and r["result"]["pid"] == survivor.pid for r in rows)
    check_invariants(db, Expected(jobs={i: f"after-kill-{n}" for n, i in enumerate(ids)}))
