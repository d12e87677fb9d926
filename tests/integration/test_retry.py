"""Retrying by hand (migration 0010, workflows.retries, `workflows retry` and `signal`): real
PostgreSQL, real workers; side effects counted in a file (retry_app)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

import workflows
from tests.integration import jobs_app
from tests.integration import retry_app as app
from tests.integration.conftest import StartWorker, until, wait_status
from workflows import ExecutionNotFoundError, NotRetryableError, SignalError, WorkflowNotFoundError
from workflows.errors import ConfigurationError
from workflows_postgres.store import PostgresStore

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
FINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(autouse=True)
def _app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RETRY_APP_DIR", str(tmp_path))
    yield


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
    env["WORKFLOWS_DATABASE_URL"] = url
    return subprocess.run(
        [str(BIN / "workflows"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def rows(url: str) -> list[tuple[Any, ...]]:
    """Every execution and step, in full: to compare before and after."""
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT e.*::text FROM workflows.executions e ORDER BY id").fetchall()
        found += conn.execute(
            "SELECT s.*::text FROM workflows.workflow_steps s ORDER BY workflow_id, seq"
        ).fetchall()
    return found


async def steps(store: PostgresStore, workflow_id: str) -> list[dict[str, Any]]:
    return await store.steps_of(workflow_id)


async def failed_job(store: PostgresStore, key: str) -> str:
    app.set_failing(key, True)
    job_id = await app.fragile.queue(key)
    await wait_status(store, job_id, {"failed"})
    return job_id


# ---- jobs ------------------------------------------------------------------------------------


async def test_failed_job_retried_completes_and_keeps_counting_attempts(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.JOBS)
    job_id = await failed_job(store, "j1")
    before = await store.get_status(job_id)
    assert (before["attempts"], before["max_retries"], app.ran("fragile:j1")) == (2, 1, 2)
    # Still failing: the retry gets the function's retries again (two attempts), counted on.
    state = await workflows.retry(job_id)
    assert state == {"id": job_id, "kind": "job", "status": "pending", "attempts": 2}
    again = await wait_status(store, job_id, {"failed"})
    assert (again["attempts"], again["max_retries"], app.ran("fragile:j1")) == (4, 3, 4)
    assert again["error"]["message"] == "j1 is switched to fail"
    app.set_failing("j1", False)
    workflows.retry_sync(job_id)
    assert await workflows.get_result(job_id, timeout=30) == "done j1"
    done = await store.get_status(job_id)
    assert (done["attempts"], app.ran("fragile:j1")) == (5, 5)


async def test_retried_job_with_a_concurrency_key_waits_for_its_slot(
    store: PostgresStore, start_worker: StartWorker, tmp_path: Path
) -> None:
    await start_worker(app.JOBS)
    app.set_failing("k1", True)
    first = await app.keyed.queue("k1")
    await wait_status(store, first, {"failed"})
    holder = await app.keyed.queue("k2")
    await until(lambda: app.ran("keyed:k2") == 1, "k2 to hold the key")
    app.set_failing("k1", False)
    (tmp_path / "go-k1").touch()
    await workflows.retry(first)
    # Admitted as a new one would be: the key's one slot is taken, so it waits, held.
    status = await store.get_status(first)
    assert status["status"] == "pending"
    assert status["waiting_for"] == "concurrency key shared: its 1 slot(s) are taken"
    assert app.ran("keyed:k1") == 1
    (tmp_path / "go-k2").touch()
    assert await workflows.get_result(holder, timeout=30) == "k2"
    assert await workflows.get_result(first, timeout=30) == "k1"
    assert app.ran("keyed:k1") == 2


async def test_concurrent_retries_of_one_id_retry_it_once(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.JOBS)
    job_id = await failed_job(store, "c1")
    app.set_failing("c1", False)
    outcomes = await asyncio.gather(
        *(workflows.retry(job_id) for _ in range(8)), return_exceptions=True
    )
    retried = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, NotRetryableError)]
    assert len(retried) == 1 and len(refused) == 7, outcomes
    assert all("only a failed or cancelled" in str(e) for e in refused)
    assert await workflows.get_result(job_id, timeout=30) == "done c1"
    done = await store.get_status(job_id)
    # One retry: one more attempt, and a budget granted once (1 retry again, not 7 times).
    assert (done["attempts"], done["max_retries"], app.ran("fragile:c1")) == (3, 3, 3)


async def test_retry_of_an_execution_not_failed_or_cancelled_is_a_clear_error(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    pending = await app.fragile.options(delay=3600).queue("later")
    with pytest.raises(NotRetryableError, match=f"job {pending} is pending: only a failed"):
        await workflows.retry(pending)
    await start_worker(app.JOBS, app.FLOWS)
    done = await app.fragile.queue("fine")
    await workflows.get_result(done, timeout=30)
    with pytest.raises(NotRetryableError, match="is completed"):
        workflows.retry_sync(done)
    for missing in (str(uuid.uuid4()), "not-an-id", ""):
        with pytest.raises(ExecutionNotFoundError, match="no execution"):
            await workflows.retry(missing)
    # A step of a workflow, the workflow running or not: retry the workflow instead.
    app.set_failing("s1", True)
    wf = await app.three_steps.queue("s1")
    await wait_status(store, wf, {"failed"})
    activity_id = str((await steps(store, wf))[1]["execution_id"])
    with pytest.raises(NotRetryableError, match=f"is a step of workflow {wf}: retry that"):
        await workflows.retry(activity_id)
    assert (await store.get_status(activity_id))["status"] == "failed"


# ---- workflows -------------------------------------------------------------------------------


async def test_retried_workflow_reruns_only_the_failed_step(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.FLOWS)
    app.set_failing("w1", True)
    wf = await app.three_steps.queue("w1")
    failed = await wait_status(store, wf, {"failed"})
    assert failed["error"]["type"] == "ActivityError"
    assert [s["status"] for s in await steps(store, wf)] == ["completed", "failed"]
    assert (app.ran("one:w1"), app.ran("two:w1"), app.ran("three:w1")) == (1, 1, 0)
    app.set_failing("w1", False)
    state = await workflows.retry(wf)
    assert (state["status"], state["attempts"]) == ("pending", 2)
    assert await workflows.get_result(wf, timeout=30) == 6
    # Replay read step one back; step two ran again; step three ran once.
    assert (app.ran("one:w1"), app.ran("two:w1"), app.ran("three:w1")) == (1, 2, 1)
    assert [s["status"] for s in await steps(store, wf)] == ["completed"] * 3
    assert (await store.get_status(wf))["attempts"] == 2


async def test_retry_leaves_a_failure_the_workflow_survived(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.FLOWS)
    app.set_failing("caught-w2", True)
    app.set_failing("w2", True)
    wf = await app.survives_a_failure.queue("w2")
    await wait_status(store, wf, {"failed"})
    app.set_failing("w2", False)
    await workflows.retry(wf)
    assert await workflows.get_result(wf, timeout=30) == "ok"
    # The caught failure was handed back by replay, not run again.
    assert (app.ran("two:caught-w2"), app.ran("one:w2"), app.ran("two:w2")) == (1, 1, 2)
    assert [s["status"] for s in await steps(store, wf)] == ["failed", "completed", "completed"]


async def test_retried_parent_reruns_only_its_childs_failed_step(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.FLOWS)
    app.set_failing("w3", True)
    wf = await app.child_fails.queue("w3")
    await wait_status(store, wf, {"failed"})
    child_id = str((await steps(store, wf))[1]["execution_id"])
    assert (await store.get_status(child_id))["status"] == "failed"
    app.set_failing("w3", False)
    await workflows.retry(wf)
    assert await workflows.get_result(wf, timeout=30) == 7
    assert (app.ran("one:parent-w3"), app.ran("one:w3"), app.ran("two:w3")) == (1, 1, 2)
    assert app.ran("three:w3") == 1
    assert (await store.get_status(child_id))["status"] == "completed"


async def test_cancelled_workflow_retried_resumes_where_it_was(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.FLOWS)
    wf = await app.waits_for_go.queue("w4")
    await until(
        lambda: _step_statuses(store, wf, ["completed", "scheduled"]), "the wait for the signal"
    )
    assert workflows.cancel_sync(wf) == "cancelled"
    assert [s["status"] for s in await steps(store, wf)] == ["completed", "cancelled"]
    assert workflows.cancel_sync(wf) == "already cancelled"
    await workflows.retry(wf)
    assert [s["status"] for s in await steps(store, wf)] == ["completed", "scheduled"]
    await wait_status(store, wf, {"waiting"})
    workflows.send_signal_sync(wf, "go", {"n": 1})
    assert await workflows.get_result(wf, timeout=30) == {"sum": 4, "payload": {"n": 1}}
    assert (app.ran("one:w4"), app.ran("three:w4")) == (1, 1)


async def test_timed_out_signal_wait_is_reopened_with_its_timeout(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.FLOWS)
    wf = await app.waits_for_go.queue("w5", timeout=1.0)
    failed = await wait_status(store, wf, {"failed"})
    assert failed["error"]["type"] == "SignalTimeoutError"
    await workflows.retry(wf)
    # The wait is open again, for its whole timeout from the retry: the signal finds it.
    await workflows.send_signal(wf, "go", "late")
    assert await workflows.get_result(wf, timeout=30) == {"sum": 4, "payload": "late"}
    assert (app.ran("one:w5"), app.ran("three:w5")) == (1, 1)


async def test_retry_of_a_workflow_past_its_timeout_gets_a_new_deadline(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.FLOWS)
    wf = await app.waits_for_go.options(timeout=3.0).queue("w6")
    failed = await wait_status(store, wf, {"failed"})
    assert failed["error"]["type"] == "WorkflowTimeoutError"
    await workflows.retry(wf)
    # Its timeout runs again from the retry, and status says the timeout it was given.
    assert (await store.get_status(wf))["timeout"] == pytest.approx(3.0, abs=0.01)
    await wait_status(store, wf, {"waiting"})
    await workflows.send_signal(wf, "go", 1)
    assert await workflows.get_result(wf, timeout=30) == {"sum": 4, "payload": 1}
    assert app.ran("one:w6") == 1


async def test_retry_waits_for_what_a_cancel_is_still_stopping(
    store: PostgresStore,
    start_worker: StartWorker,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker killed while its activity runs: the cancel cannot stop the activity until the
    # fleet finds the worker dead, and until then a retry of the workflow is refused.
    env = {**os.environ, "WORKFLOWS_DATABASE_URL": database_url}
    worker = subprocess.Popen(
        [str(BIN / "currant"), "worker", "-q", app.FLOWS, "-A", "tests.integration.retry_app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wf = await app.gated.queue("busy")
        await until(lambda: app.ran("gate:busy") == 1, "the activity to start")
        # An activity may start ahead of the write that records it: killed before that
        # write, the workflow would have no step to be stopping.
        await until(lambda: _has_steps(store, wf), "the activity's step to be written")
    finally:
        worker.kill()
        worker.wait(30)
    [step] = await steps(store, wf)
    activity_id = str(step["execution_id"])
    assert await workflows.cancel(wf) == "cancelled"
    assert (await store.get_status(activity_id))["status"] == "running"
    with pytest.raises(NotRetryableError, match=f"execution {activity_id} under it is still"):
        await workflows.retry(wf)
    assert (await store.get_status(wf))["status"] == "cancelled"
    # Found dead by a live worker: the activity ends, and the retry runs it again.
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT", "1")
    await start_worker(app.FLOWS)
    await wait_status(store, activity_id, FINAL, timeout=30)
    (tmp_path / "go-busy").touch()
    await workflows.retry(wf)
    assert await workflows.get_result(wf, timeout=30) == "busy"
    assert app.ran("gate:busy") == 2


async def _has_steps(store: PostgresStore, wf: str) -> bool:
    return bool(await steps(store, wf))


async def _run_failed(store: PostgresStore, wf: str, attempts: int) -> bool:
    status = await store.get_status(wf)
    return bool(status["status"] == "failed" and status["attempts"] == attempts)


async def _step_statuses(store: PostgresStore, wf: str, wanted: list[str]) -> bool:
    return [s["status"] for s in await steps(store, wf)] == wanted


# ---- bulk ------------------------------------------------------------------------------------


async def cancelled_jobs(count: int, key: str) -> list[str]:
    ids = []
    for n in range(count):
        job_id = await app.fragile.options(delay=3600).queue(f"{key}{n}")
        await workflows.cancel(job_id)
        ids.append(job_id)
    return ids


async def test_bulk_walk_stays_on_its_index(store: PostgresStore) -> None:
    # Many rows of other statuses, a few to retry: each batch is a range of
    # executions_retryable from the cursor on, in the generic plan a prepared statement keeps.
    await jobs_app.record.queue_many([((str(i),), {}) for i in range(2000)])
    await cancelled_jobs(3, "p")
    await store.pool.execute("ANALYZE workflows.executions")
    async with store.pool.acquire() as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        for name in ("retry_candidates", "retry_batch"):
            await conn.execute(f"PREPARE {name} AS {store.sql(name)}")
            found = await conn.fetch(
                f"EXPLAIN EXECUTE {name}('{app.JOBS}', 'cancelled', NULL, NULL, NULL, NULL, "
                "NULL, 100)"
            )
            plan = "\n".join(row[0] for row in found)
            assert "executions_retryable" in plan, plan
            assert "Seq Scan on executions" not in plan, plan
            index_cond = next(line for line in plan.splitlines() if "Index Cond" in line)
            assert "finished_at" in index_cond, plan
        await conn.execute("RESET plan_cache_mode")


async def test_bulk_dry_run_lists_matches_and_changes_nothing(
    store: PostgresStore, database_url: str
) -> None:
    ids = await cancelled_jobs(3, "d")
    other = await jobs_app.record.options(delay=3600).queue("other queue")
    await workflows.cancel(other)
    before = rows(database_url)
    found = await workflows.retry_many(queue=app.JOBS, status="cancelled", dry_run=True)
    assert [r["id"] for r in found] == ids
    assert rows(database_url) == before
    result = cli(
        "retry",
        "--queue",
        app.JOBS,
        "--status",
        "cancelled",
        "--dry-run",
        "--json",
        url=database_url,
    )
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == ids
    assert rows(database_url) == before
    text = cli("retry", "-q", app.JOBS, "-s", "cancelled", "--dry-run", url=database_url)
    assert "would retry 3 (dry run: nothing changed)" in text.stdout
    assert rows(database_url) == before


async def test_bulk_retry_filters_by_status_name_time_and_limit(
    store: PostgresStore, database_url: str, start_worker: StartWorker
) -> None:
    early = await cancelled_jobs(2, "e")
    cut = datetime.now(UTC)
    late = await cancelled_jobs(3, "l")
    keyed = await app.keyed.options(delay=3600).queue("x")
    await workflows.cancel(keyed)
    # A step of a workflow is never matched: only roots.
    await start_worker(app.FLOWS)
    app.set_failing("b1", True)
    wf = await app.three_steps.queue("b1")
    await wait_status(store, wf, {"failed"})
    assert await workflows.retry_many(queue=app.JOBS, status="failed") == []
    name = "tests.integration.retry_app:fragile"
    got = await workflows.retry_many(
        queue=app.JOBS, status="cancelled", name=name, since=cut, limit=2
    )
    assert [r["id"] for r in got] == late[:2]
    assert all(r["status"] == "pending" and "skipped" not in r for r in got)
    assert set(got[0]) == {"id", "kind", "name", "queue", "status", "attempts", "finished_at"}
    statuses = {i: (await store.get_status(i))["status"] for i in early + late + [keyed]}
    assert statuses == {
        **dict.fromkeys(early, "cancelled"),
        **dict.fromkeys(late[:2], "pending"),
        late[2]: "cancelled",
        keyed: "cancelled",
    }
    until_cut = workflows.retry_many_sync(
        queue=app.JOBS, status="cancelled", until=cut.isoformat(), since="1h"
    )
    assert [r["id"] for r in until_cut] == early
    result = cli("retry", "-q", app.JOBS, "-s", "cancelled", "--json", url=database_url)
    assert [r["id"] for r in json.loads(result.stdout)] == [late[2], keyed]
    flows = cli("retry", "-q", app.FLOWS, "-s", "failed", url=database_url)
    assert flows.stdout.splitlines()[-1] == "retried 1, skipped 0"
    assert wf in flows.stdout
    # Still failing on its second step: failed again, as its second run.
    await until(lambda: _run_failed(store, wf, 2), "the retried workflow's second run")
    assert (app.ran("one:b1"), app.ran("two:b1")) == (1, 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"status": "completed"}, "status must be 'failed' or 'cancelled'"),
        ({"since": "yesterday"}, "since must be an ISO-8601 time or a duration ago"),
        ({"since": "1h", "until": "2h"}, "must be before until"),
        ({"limit": 0}, "limit must be a whole number from 1 up"),
        ({"queue": ""}, "queue"),
        ({"since": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
async def test_bulk_retry_refuses_bad_filters(
    database_url: str, options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"queue": app.JOBS, "status": "failed", **options}
    with pytest.raises(ConfigurationError, match=message):
        await workflows.retry_many(**arguments)


# ---- the command line ------------------------------------------------------------------------


async def test_cli_retry_of_one_and_its_errors(
    store: PostgresStore, database_url: str, start_worker: StartWorker
) -> None:
    [job_id] = await cancelled_jobs(1, "cli")
    result = cli("retry", job_id, "--json", url=database_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "pending"
    again = cli("retry", job_id, url=database_url)
    assert again.returncode == 6
    assert again.stderr.startswith("error: job ") and "is pending" in again.stderr
    missing = cli("retry", str(uuid.uuid4()), url=database_url)
    assert (missing.returncode, missing.stderr.startswith("error: no execution")) == (4, True)
    both = cli("retry", job_id, "--queue", app.JOBS, url=database_url)
    assert both.returncode == 2 and "not both" in both.stderr
    neither = cli("retry", url=database_url)
    assert neither.returncode == 2 and "--queue and --status" in neither.stderr
    bad = cli("retry", "-q", app.JOBS, "-s", "failed", "--since", "last week", url=database_url)
    assert bad.returncode == 1
    assert (
        bad.stderr == "error: since must be an ISO-8601 time or a duration ago (30m, 2h, "
        "7d), got 'last week'\n"
    )


async def test_cli_signal_with_json_without_and_with_bad_json(
    store: PostgresStore, database_url: str, start_worker: StartWorker
) -> None:
    await start_worker(app.FLOWS)
    wf = await app.waits_for_go.queue("sig")
    await until(
        lambda: _step_statuses(store, wf, ["completed", "scheduled"]), "the wait for the signal"
    )
    bad = cli("signal", wf, "go", "{not json", url=database_url)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: the payload is not valid JSON")
    assert len(bad.stderr.strip().splitlines()) == 1
    sent = cli("signal", wf, "go", '{"n": [1, 2]}', url=database_url)
    assert sent.returncode == 0, sent.stderr
    assert await workflows.get_result(wf, timeout=30) == {"sum": 4, "payload": {"n": [1, 2]}}
    finished = cli("signal", wf, "go", url=database_url)
    assert finished.returncode == 1 and "already completed" in finished.stderr
    wf2 = await app.waits_for_go.queue("sig2")
    await until(
        lambda: _step_statuses(store, wf2, ["completed", "scheduled"]), "the wait for the signal"
    )
    assert cli("signal", wf2, "go", url=database_url).returncode == 0
    assert await workflows.get_result(wf2, timeout=30) == {"sum": 4, "payload": None}
    job_id = await jobs_app.record.options(delay=3600).queue("a job")
    not_wf = cli("signal", job_id, "go", "1", url=database_url)
    assert not_wf.returncode == 4 and "it is a job" in not_wf.stderr


async def test_send_signal_to_a_job_or_activity_is_workflow_not_found(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await jobs_app.record.options(delay=3600).queue("a job")
    with pytest.raises(WorkflowNotFoundError, match="it is a job"):
        await workflows.send_signal(job_id, "go", 1)
    await start_worker(app.FLOWS)
    wf = await app.three_steps.queue("sa")
    await workflows.get_result(wf, timeout=30)
    activity_id = str((await steps(store, wf))[0]["execution_id"])
    with pytest.raises(WorkflowNotFoundError, match="it is an activity"):
        workflows.send_signal_sync(activity_id, "go", 1)
    # A finished workflow is found: a SignalError, not a WorkflowNotFoundError.
    with pytest.raises(SignalError, match="already completed") as caught:
        await workflows.send_signal(wf, "go", 1)
    assert not isinstance(caught.value, WorkflowNotFoundError)


async def test_cancel_sync_cancels_and_reports(store: PostgresStore) -> None:
    job_id = await app.fragile.options(delay=3600).queue("cs")
    assert workflows.cancel_sync(job_id) == "cancelled"
    assert (await store.get_status(job_id))["status"] == "cancelled"
    assert workflows.cancel_sync(job_id) == "already cancelled"
    with pytest.raises(ExecutionNotFoundError):
        workflows.cancel_sync(str(uuid.uuid4()))
