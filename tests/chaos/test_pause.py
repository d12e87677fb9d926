"""A worker paused with SIGSTOP past the heartbeat timeout, then resumed: its work was recovered
meanwhile, so its late results must be discarded (and say so) while the new owner's stand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos import chaos_app
from tests.chaos.harness import (
    HEARTBEAT_TIMEOUT,
    Db,
    Expected,
    Fleet,
    WorkerProcess,
    check_invariants,
    wait_for,
)


def running_on(db: Db, execution_id: str, worker_id: str | None) -> None:
    wait_for(
        db,
        "SELECT count(*) FROM workflows.executions "
        "WHERE id = %s AND status = 'running' AND worker_id = %s",
        (execution_id, worker_id),
        f"{execution_id} to run on {worker_id}",
    )


def logged(worker: WorkerProcess, text: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while text not in worker.log():
        assert time.monotonic() < end, f"{worker.name} never logged {text!r}:\n{worker.log()}"
        time.sleep(0.005)


@pytest.mark.timeout(120)
def test_paused_worker_is_fenced_when_it_resumes_and_keeps_working(
    fleet: Fleet, chaos_db: Db, tmp_path: Path
) -> None:
    db = chaos_db
    paused = fleet.start()
    fleet.wait_ready(paused)
    job_id = chaos_app.work.queue_sync("fenced-job", 2.0)
    running_on(db, job_id, paused.worker_id)
    # The database says running as soon as the claim (or a handoff) commits, which can be
    # before the worker's loop has the claim: a pause there would find nothing to fence.
    logged(paused, f"started job {chaos_app.work.path} id={job_id} attempt=1")
    # The workflow's first activation holds the paused worker's loop until the hold file goes:
    # the pause lands inside it, and the job's result waits for that loop too.
    hold = tmp_path / f"hold-{paused.pid}"
    hold.touch()
    wf = chaos_app.three_steps.queue_sync("fenced-wf", 0.05, 0, str(tmp_path))
    end = time.monotonic() + 30
    while not (tmp_path / f"started-{paused.pid}").exists():
        assert time.monotonic() < end, f"the workflow never started:\n{paused.log()}"
        time.sleep(0.005)
    running_on(db, wf, paused.worker_id)
    paused.pause()
    paused_at = time.monotonic()

    rescuer = fleet.start()
    fleet.wait_ready(rescuer)
    # The rescuer holds both now: the job's retry runs there, the workflow is being replayed.
    running_on(db, job_id, rescuer.worker_id)
    wait_for(
        db,
        "SELECT count(*) FROM workflows.executions WHERE id = %s AND lease >= 2",
        (wf,),
        "the workflow to be claimed again",
    )
    taken_over = time.monotonic() - paused_at
    # Not before the timeout (less what passed since its last beat, at most a beat or two).
    assert taken_over >= HEARTBEAT_TIMEOUT - 1.0
    hold.unlink()
    paused.resume()

    end = time.monotonic() + 20
    late_job = (
        f"discarded the result of job {chaos_app.work.path} id={job_id}: its claim was taken over"
    )
    late_activation = (
        f"discarded an activation of workflow {chaos_app.three_steps.path} id={wf}: "
        "its claim was taken over"
    )
    while late_job not in paused.log() or late_activation not in paused.log():
        assert time.monotonic() < end, f"no discard logged:\n{paused.log()[-3000:]}"
        time.sleep(0.05)
    assert "was declared dead by a peer; registering again" in paused.log()

    end = time.monotonic() + 30
    while db.value(
        "SELECT count(*) FROM workflows.executions WHERE status <> 'completed' "
        "AND (id = ANY(%s::uuid[]) OR parent_id = %s)",
        ([job_id, wf], wf),
    ):
        assert time.monotonic() < end, "the recovered work did not finish"
        time.sleep(0.05)
    checked = check_invariants(
        db, Expected(jobs={job_id: "fenced-job"}, workflows={wf: "fenced-wf"}, steps={wf: 3})
    )
    job = db.rows("SELECT result, attempts FROM workflows.executions WHERE id = %s", (job_id,))[0]
    assert job["result"]["pid"] == rescuer.pid, "the recorded result is the new owner's"
    assert job["attempts"] == 2
    # Both ran it (at least once is the promise), but only the new owner's result counts.
    runs = db.rows("SELECT pid FROM chaos_side_effects WHERE key = 'fenced-job'")
    assert sorted(r["pid"] for r in runs) == sorted([paused.pid, rescuer.pid])
    print(
        f"pause: taken over {taken_over:.2f} s after SIGSTOP; the paused worker's job result "
        f"and workflow activation were discarded; {checked}"
    )

    # The paused worker registered again and still serves.
    assert paused.alive()
    assert rescuer.terminate() == 0
    after = chaos_app.work.queue_sync("after-pause", 0.01)
    wait_for(
        db,
        "SELECT count(*) FROM workflows.executions WHERE id = %s AND status = 'completed'",
        (after,),
        "the resumed worker to run new work",
    )
    result = db.value("SELECT result FROM workflows.executions WHERE id = %s", (after,))
    assert result["pid"] == paused.pid
    assert paused.terminate() == 0
    assert db.value("SELECT count(*) FROM workflows.worker_heartbeats") == 0
