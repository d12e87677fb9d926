"""A fleet of workers: heartbeats, failover, fencing, metrics, poison and hostile input.

In-process workers on a real PostgreSQL; a dead worker is played by a heartbeat row aged with an
UPDATE and executions claimed in its name, so every test here is deterministic and quick. The
same behaviour with real processes killed at random is in tests/chaos.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import workflows
from tests.integration import jobs_app
from tests.integration.conftest import StartWorker, until, wait_status
from workflows import (
    ConfigurationError,
    SerializationError,
    activity,
    job,
    wait_for_signal,
    workflow,
)
from workflows.config import Settings
from workflows.records import Outcome, Plan, Registration
from workflows_postgres.store import PostgresStore
from workflows_worker.worker import Worker

QUEUE = "fleet"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

# What ran in this process (the workers are in-process, so the test sees it).
effects: dict[str, int] = {}
gates: dict[str, asyncio.Event] = {}


def did(key: str) -> int:
    effects[key] = effects.get(key, 0) + 1
    return effects[key]


@job(queue=QUEUE, retries=2)
async def effect(key: str) -> str:
    did(key)
    return f"done {key}"


@job(queue=QUEUE, retries=0)
async def gated(key: str) -> str:
    did(key)
    await gates.setdefault(key, asyncio.Event()).wait()
    return f"late {key}"


@job(queue=QUEUE, retries=3)
async def fails_first(key: str, failures: int) -> str:
    if did(key) <= failures:
        raise RuntimeError(f"failure {effects[key]} of {key}")
    return key


@job(queue=QUEUE, retries=0)
async def always_fails(key: str) -> None:
    did(key)
    raise ValueError(key)


@job(queue=QUEUE, retries=1)
def exits(code: int) -> None:
    # A library calling sys.exit() (argparse, click) inside a job: one failed attempt, no more.
    sys.exit(code)


@job(queue=QUEUE, retries=0)
async def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@job(queue=QUEUE, retries=0)
async def raises_verbatim(message: str) -> None:
    raise ValueError(message)


@activity(queue=QUEUE, retries=3)
async def step(key: str, i: int) -> str:
    did(f"{key}/{i}")
    return f"{key}/{i}"


@workflow(queue=QUEUE)
async def two_steps(key: str) -> list[str]:
    return [await step.run(key, 0), await step.run(key, 1)]


@workflow(queue=QUEUE)
async def step_signal_step(key: str) -> list[Any]:
    first = await step.run(key, 0)
    go = await wait_for_signal("go")
    return [first, go, await step.run(key, 1)]


@workflow(queue=QUEUE)
async def one_arg(key: str) -> str:
    return key


@activity(queue=QUEUE, retries=0)
async def length(text: str) -> int:
    return len(text)


@workflow(queue=QUEUE)
async def big_step(size: int) -> int:
    return await length.run("x" * size)


@workflow(queue=QUEUE)
async def signal_echo(name: str) -> Any:
    return await wait_for_signal(name)


@pytest.fixture(autouse=True)
def _quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.1")
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT", "1")
    # A gated job left running at teardown must not hold the test for the default 30 s.
    monkeypatch.setenv("WORKFLOWS_WORKER_SHUTDOWN_GRACE", "0.5")
    effects.clear()
    gates.clear()


@contextlib.asynccontextmanager
async def running(*queues: str, **kwargs: Any) -> AsyncIterator[tuple[Worker, asyncio.Task[None]]]:
    """A worker whose run() the test awaits itself (start_worker hides the task)."""
    worker = Worker(list(queues), settings=Settings.from_env(), **kwargs)
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: worker.healthy() or task.done(), "worker up")
        if task.done():
            task.result()
        yield worker, task
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def heartbeat_row(store: PostgresStore, worker_id: str) -> Any:
    return await store.pool.fetchrow(
        "SELECT worker_id::text AS worker_id, hostname, pid, queues, last_heartbeat "
        "FROM workflows.worker_heartbeats WHERE worker_id = $1::uuid",
        worker_id,
    )


async def age_heartbeat(store: PostgresStore, worker_id: str) -> None:
    await store.pool.execute(
        "UPDATE workflows.worker_heartbeats SET last_heartbeat = now() - interval '1 hour' "
        "WHERE worker_id = $1::uuid",
        worker_id,
    )


async def owner_of(store: PostgresStore, execution_id: str) -> str | None:
    owner = await store.pool.fetchval(
        "SELECT worker_id::text FROM workflows.executions WHERE id = $1::uuid", execution_id
    )
    return None if owner is None else str(owner)


def sample(worker: Worker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


# ---- heartbeats ---------------------------------------------------------------------------


async def test_worker_registers_beats_and_deregisters_at_once_on_graceful_shutdown(
    store: PostgresStore,
) -> None:
    async with running(QUEUE, "other") as (worker, task):
        row = await heartbeat_row(store, worker.id)
        assert row is not None
        assert row["pid"] == os.getpid()
        assert row["queues"] == [QUEUE, "other"]
        first = row["last_heartbeat"]

        async def beat_moved() -> bool:
            now = await heartbeat_row(store, worker.id)
            return bool(now["last_heartbeat"] > first)

        await until(beat_moved, "a second heartbeat", timeout=5)
        worker.stop()
        await asyncio.wait_for(task, 10)
        # Gone when run() returns: no peer waits out a heartbeat timeout for a clean exit.
        assert await heartbeat_row(store, worker.id) is None


async def test_graceful_shutdown_hands_work_back_without_a_heartbeat_timeout(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A timeout of a minute: the handover below can only come from the shutdown itself.
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT", "60")
    monkeypatch.setenv("WORKFLOWS_WORKER_SHUTDOWN_GRACE", "0.2")
    job_id = await gated.queue("handover")
    async with running(QUEUE) as (first, task):
        await wait_status(store, job_id, {"running"})
        first.stop()
        await asyncio.wait_for(task, 10)
    status = await store.get_status(job_id)
    assert status["status"] == "pending"
    assert status["attempts"] == 0, "an attempt cut short by shutdown is not counted"
    gates.setdefault("handover", asyncio.Event()).set()
    async with running(QUEUE):
        done = await wait_status(store, job_id, {"completed"}, timeout=5)
    assert done["attempts"] == 1
    assert done["result"] == "late handover"


# ---- failover ------------------------------------------------------------------------------


async def test_dead_worker_is_recovered_by_exactly_one_of_two_live_workers(
    store: PostgresStore, start_worker: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workflows_worker")
    dead = str(uuid.uuid4())
    await store.register_worker(dead, Registration("gone-host", 424242, (QUEUE,), "0"))
    retried = await effect.options(retries=2).queue("retried")
    final = await effect.options(retries=0).queue("final")
    wf = await two_steps.queue("wf")
    taken = await store.claim(dead, [QUEUE], 10)
    assert {c.id for c in taken} == {retried, final, wf}
    a = await start_worker(QUEUE)
    b = await start_worker(QUEUE)
    # Both live workers look at the same stale row on their next beat: one DELETE wins.
    await age_heartbeat(store, dead)

    redone = await wait_status(store, retried, {"completed"})
    assert redone["attempts"] == 2, "the lost attempt counts, then the retry runs"
    assert redone["result"] == "done retried"
    lost = await wait_status(store, final, {"failed"})
    assert lost["attempts"] == 1
    assert lost["error"] == {"type": "WorkerLost", "message": "worker lost"}
    assert effects.get("final") is None, "no retries left: the lost attempt was the last"
    assert await workflows.get_result(wf, timeout=20) == ["wf/0", "wf/1"]
    assert await heartbeat_row(store, dead) is None

    recoveries = [sample(w, "workflows_worker_recoveries_total") for w in (a, b)]
    assert sorted(recoveries) == [0.0, 1.0]
    rescuer = (a, b)[recoveries.index(1.0)]
    lost_attempts = {"queue": QUEUE, "outcome": "lost"}
    assert sample(rescuer, "workflows_attempts_total", kind="job", **lost_attempts) == 2
    assert sample(rescuer, "workflows_attempts_total", kind="workflow", **lost_attempts) == 1
    logged = [r.getMessage() for r in caplog.records if "recovered dead worker" in r.getMessage()]
    assert logged == [f"recovered dead worker {dead[:8]} (gone-host pid 424242)"]
    assert any("recovered 3 executions (1 workflows)" in r.getMessage() for r in caplog.records)


async def test_a_worker_judges_no_peer_before_beating_on_time_for_a_whole_timeout(
    store: PostgresStore,
) -> None:
    # Just started (or back from a database outage, or a pause): every heartbeat it sees may be
    # stale only because nobody could beat. It gives its peers a timeout (1 s here) first.
    async with running(QUEUE) as (worker, _):
        stale = str(uuid.uuid4())
        await store.register_worker(stale, Registration("quiet-host", 1, (QUEUE,), "0"))
        await age_heartbeat(store, stale)
        await asyncio.sleep(0.4)
        assert await heartbeat_row(store, stale) is not None
        assert sample(worker, "workflows_worker_recoveries_total") == 0

        async def gone() -> bool:
            return await heartbeat_row(store, stale) is None

        await until(gone, "the stale peer to be recovered", timeout=5)
        assert sample(worker, "workflows_worker_recoveries_total") == 1


async def test_recovered_workflow_resumes_from_its_history(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workflows_worker")
    wf = await step_signal_step.queue("resume")
    async with running(QUEUE):

        async def waiting_for_signal() -> bool:
            steps = await store.steps_of(wf)
            return [(s["kind"], s["status"]) for s in steps] == [
                ("activity", "completed"),
                ("signal", "scheduled"),
            ]

        await until(waiting_for_signal, "the workflow to wait for its signal")
    await workflows.send_signal(wf, "go", "green")
    # A worker claims it and dies before running the activation.
    dead = str(uuid.uuid4())
    await store.register_worker(dead, Registration("gone-host", 1, (QUEUE,), "0"))
    assert [c.id for c in await store.claim(dead, [QUEUE], 1)] == [wf]
    await age_heartbeat(store, dead)
    async with running(QUEUE):
        assert await workflows.get_result(wf, timeout=20) == ["resume/0", "green", "resume/1"]
    assert effects == {"resume/0": 1, "resume/1": 1}, "history spared the first step a rerun"
    assert any(
        f"replayed workflow {step_signal_step.path} id={wf} from 2 steps" in r.getMessage()
        for r in caplog.records
    )


# ---- fencing -------------------------------------------------------------------------------


async def test_outcome_recorded_under_an_old_lease_is_discarded_and_the_new_owners_stands(
    store: PostgresStore,
) -> None:
    old_owner, new_owner = str(uuid.uuid4()), str(uuid.uuid4())
    await store.register_worker(old_owner, Registration("paused-host", 1, (QUEUE,), "0"))
    await store.register_worker(new_owner, Registration("live-host", 2, (QUEUE,), "0"))
    job_id = await effect.queue("fenced")
    [old] = await store.claim(old_owner, [QUEUE], 1)
    await age_heartbeat(store, old_owner)
    recovery = await store.recover(new_owner, 1.0)
    dead, lost = recovery.dead, recovery.recovered
    assert [w.worker_id for w in dead] == [old_owner]
    assert [r.id for r in lost] == [job_id]
    [new] = await store.claim(new_owner, [QUEUE], 1)
    assert (new.lease, new.attempts) == (old.lease + 1, 2)

    late = Outcome(job_id, old.lease, "completed", result=json.dumps("old owner"))
    late_retry = Outcome(job_id, old.lease, "pending", error=json.dumps({"type": "X"}))
    assert await store.record_outcomes([late, late_retry]) == set()
    assert await store.release(old, old_owner) is False
    running_now = await store.get_status(job_id)
    assert running_now["status"] == "running" and running_now["result"] is None
    assert await store.record_outcomes(
        [Outcome(job_id, new.lease, "completed", result=json.dumps("new owner"))]
    ) == {job_id}
    # Later still, after the new owner finished: nothing changes either.
    assert await store.record_outcomes([late]) == set()
    done = await store.get_status(job_id)
    assert done["status"] == "completed" and done["result"] == "new owner"


async def test_workflow_activation_under_an_old_lease_writes_nothing(store: PostgresStore) -> None:
    owner = str(uuid.uuid4())
    wf = await two_steps.queue("fenced-wf")
    [old] = await store.claim(owner, [QUEUE], 1)
    await store.release(old, owner)
    [new] = await store.claim(owner, [QUEUE], 1)
    assert new.lease == old.lease + 1
    applied = await store.apply_activation(
        old,
        owner,
        number=0,
        delivered=(),
        plan=Plan([], [], []),
        status="completed",
        result=json.dumps("stale"),
        error=None,
    )
    assert applied.status is None
    status = await store.get_status(wf)
    assert status["status"] == "running" and status["result"] is None
    assert await store.steps_of(wf) == []


async def test_worker_that_lost_its_claim_discards_its_late_result_and_logs_it(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workflows_worker")
    # The worker beats once at start, then not for a minute: as if paused (SIGSTOP, a long GC).
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "60")
    # Settings refuse an interval of half the timeout or more: a live worker would look dead.
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT", "300")
    job_id = await gated.options(retries=1).queue("paused")
    # One slot, held by the gated job: the worker cannot take the job back itself.
    async with running(QUEUE, concurrency=1) as (paused, _):
        await wait_status(store, job_id, {"running"})
        assert await owner_of(store, job_id) == paused.id
        peer = str(uuid.uuid4())
        await store.register_worker(peer, Registration("peer-host", 2, (QUEUE,), "0"))
        await age_heartbeat(store, paused.id)
        dead = (await store.recover(peer, 1.0)).dead
        assert [w.worker_id for w in dead] == [paused.id]
        [taken] = await store.claim(peer, [QUEUE], 1)
        assert taken.id == job_id

        gates.setdefault("paused", asyncio.Event()).set()

        def discarded() -> bool:
            return any(
                f"discarded the result of job {gated.path} id={job_id}: its claim was taken over"
                in r.getMessage()
                for r in caplog.records
            )

        await until(discarded, "the late result to be discarded")
        assert (await store.get_status(job_id))["status"] == "running"
        assert await owner_of(store, job_id) == peer
        assert await store.record_outcomes(
            [Outcome(job_id, taken.lease, "completed", result=json.dumps("peer's"))]
        ) == {job_id}
        assert (await store.get_status(job_id))["result"] == "peer's"
        assert paused.healthy(), "a discarded result is no reason to stop"
        # It still works: a fresh job runs on it.
        again = await effect.queue("after")
        assert await workflows.get_result(again, timeout=10) == "done after"


# ---- metrics -------------------------------------------------------------------------------


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_metrics_scrape_parses_and_counts_the_work_done(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    worker = await start_worker(QUEUE, metrics_port=0, concurrency=4)
    assert worker._server is not None
    port = worker._server.port
    assert port > 0
    ids = [await effect.queue(f"ok{i}") for i in range(5)]
    ids += [await fails_first.queue("twice", 2), await always_fails.queue("never")]
    ids.append(await two_steps.queue("metered"))
    for execution_id in ids:
        await store.wait_finished(execution_id, 20)

    def counted_and_beaten() -> bool:
        # The gauges read the database on the heartbeat: wait for one after the work.
        in_progress = sample(worker, "workflows_executions_in_progress", queue=QUEUE)
        depth = sample(worker, "workflows_queue_depth", queue=QUEUE, status="pending")
        return (
            in_progress == 0
            and depth == 0
            and worker.metrics.registry.get_sample_value("workflows_workers_alive") == 1
        )

    await until(counted_and_beaten, "gauges to settle")
    code, text = await asyncio.to_thread(scrape, port, "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The parser names a counter's family without its `_total`.
    for name in (
        "workflows_attempts",
        "workflows_executions_finished",
        "workflows_execution_duration_seconds",
        "workflows_pickup_latency_seconds",
        "workflows_executions_in_progress",
        "workflows_queue_depth",
        "workflows_queue_depth_estimated",
        "workflows_queue_oldest_pending_age_seconds",
        "workflows_workers_alive",
        "workflows_build_info",
    ):
        assert name in families, f"{name} missing from the scrape"
    assert not [s.name for f in families.values() for s in f.samples if "_created" in s.name]

    def value(family: str, sample_name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    attempts, finished = "workflows_attempts_total", "workflows_executions_finished_total"
    # 9 job attempts: 6 completed, 2 failed and retried, 1 failed for good.
    assert value("workflows_attempts", attempts, kind="job", outcome="completed") == 6
    assert value("workflows_attempts", attempts, kind="job", outcome="failed") == 3
    assert value("workflows_attempts", attempts, kind="activity", outcome="completed") == 2
    assert value("workflows_attempts", attempts, kind="workflow", outcome="completed") == 1
    assert value("workflows_attempts", attempts, kind="workflow") == 3
    assert value("workflows_attempts", attempts, outcome="lost") == 0
    # 8 executions, each once, with its final status.
    assert value("workflows_executions_finished", finished, kind="job", status="completed") == 6
    assert value("workflows_executions_finished", finished, kind="job", status="failed") == 1
    assert value("workflows_executions_finished", finished, kind="activity") == 2
    assert value("workflows_executions_finished", finished, kind="workflow") == 1
    assert value("workflows_executions_finished", finished) == 10
    duration = "workflows_execution_duration_seconds"
    # Every run is timed: 9 job attempts, 2 activities, the workflow's 3 activations (its
    # start, then one on each activity's outcome).
    assert value(duration, duration + "_count", kind="job") == 9
    assert value(duration, duration + "_count", kind="activity") == 2
    assert value(duration, duration + "_count", kind="workflow") == 3
    # Each claim is a pickup: the jobs' and activities' runs, and at least the workflow's
    # start (activations on an activity's outcome here are not claims).
    pickup = "workflows_pickup_latency_seconds"
    assert 9 + 2 + 1 <= value(pickup, pickup + "_count", queue=QUEUE) <= 9 + 2 + 3
    assert value("workflows_executions_in_progress", "workflows_executions_in_progress") == 0
    assert value("workflows_queue_depth", "workflows_queue_depth", status="pending") == 0
    assert value("workflows_workers_alive", "workflows_workers_alive") == 1

    assert await asyncio.to_thread(scrape, port, "/healthz") == (200, "ok")
    assert (await asyncio.to_thread(scrape, port, "/nope"))[0] == 404


# ---- poison --------------------------------------------------------------------------------


async def insert_raw(store: PostgresStore, kind: str, name: str, args: str, retries: int) -> str:
    """An execution written around the client's checks (an old client, a hand-made row)."""
    return str(
        await store.pool.fetchval(
            "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, version) "
            "VALUES (gen_random_uuid(), $1, $2, $3, $4::jsonb, $5, "
            "CASE WHEN $1 = 'workflow' THEN 1 END) RETURNING id::text",
            kind,
            name,
            QUEUE,
            args,
            retries,
        )
    )


async def test_poison_executions_end_for_good_and_the_worker_keeps_serving(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_MAX_PAYLOAD_BYTES", "2000")
    async with running(QUEUE) as (worker, task):
        bad_job_args = await insert_raw(store, "job", effect.path, '"not a call"', 1)
        bad_wf_args = await insert_raw(store, "workflow", one_arg.path, '"not a call"', 0)
        wrong_arity = await one_arg.queue("a", "b")  # type: ignore[call-arg]
        step_too_big = await big_step.queue(5000)
        sys_exit = await exits.queue(3)
        unknown = await insert_raw(store, "job", "tests.nowhere:nothing", "{}", 5)

        failed = {
            name: await wait_status(store, execution_id, {"failed", "completed"})
            for name, execution_id in {
                "bad_job_args": bad_job_args,
                "bad_wf_args": bad_wf_args,
                "wrong_arity": wrong_arity,
                "step_too_big": step_too_big,
                "sys_exit": sys_exit,
                "unknown": unknown,
            }.items()
        }
        assert {name: s["status"] for name, s in failed.items()} == dict.fromkeys(failed, "failed")
        assert failed["bad_job_args"]["attempts"] == 2, "an ordinary failure: retried, then done"
        assert failed["sys_exit"]["attempts"] == 2
        assert failed["sys_exit"]["error"]["type"] == "SystemExit"
        assert failed["unknown"]["attempts"] == 1, "a missing function is not retried"
        assert failed["unknown"]["error"]["type"] == "FunctionNotFound"
        assert failed["wrong_arity"]["error"]["type"] == "TypeError"
        assert failed["bad_wf_args"]["error"]["type"] == "AttributeError"
        assert failed["step_too_big"]["error"]["type"] == "SerializationError"
        assert "WORKFLOWS_MAX_PAYLOAD_BYTES" in failed["step_too_big"]["error"]["message"]
        # Each workflow was claimed once: failed, not handed back to be claimed again.
        leases = await store.pool.fetch(
            "SELECT lease FROM workflows.executions WHERE id = ANY($1::uuid[])",
            [bad_wf_args, wrong_arity, step_too_big],
        )
        assert [r["lease"] for r in leases] == [1, 1, 1]

        assert not task.done() and worker.healthy()
        after = await effect.queue("still serving")
        assert await workflows.get_result(after, timeout=10) == "done still serving"


# ---- hostile input -------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE workflows.executions; --",
    "Robert'); DROP TABLE students;--",
    '" OR "1"="1',
    "$1 $2::text ::jsonb",
    "%s %(p1)s %% {s} {work} {{}}",
    "\\x00 \\u0000 \\' \\\\",
    "/* */ SELECT pg_sleep(30); -- E'\\''",
    "line\nbreak\ttab\r\x1b[31mred",
    "ünïcödé ✓ 🚀 ‮rtl",
]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "workflows"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_hostile_strings_are_stored_and_shown_verbatim(
    store: PostgresStore, database_url: str
) -> None:
    kwargs = {text: text for text in HOSTILE}
    job_id = await echo.options(idempotency_key=HOSTILE[0]).queue(*HOSTILE, **kwargs)
    error_id = await raises_verbatim.queue(HOSTILE[0] + HOSTILE[-1])
    wf = await signal_echo.queue(HOSTILE[1])
    await workflows.send_signal(wf, HOSTILE[1], HOSTILE)
    async with running(QUEUE):
        assert await workflows.get_result(job_id, timeout=20) == {
            "args": HOSTILE,
            "kwargs": kwargs,
        }
        assert await workflows.get_result(wf, timeout=20) == HOSTILE
        await wait_status(store, error_id, {"failed"})
    # Enqueueing again with the same hostile key finds the same execution.
    assert await echo.options(idempotency_key=HOSTILE[0]).queue("other") == job_id
    tables = await store.pool.fetchval(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'workflows'"
    )
    assert tables >= 5

    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
    env["WORKFLOWS_DATABASE_URL"] = database_url
    shown = cli("status", job_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["args"] == {"args": HOSTILE, "kwargs": kwargs}
    assert status["result"] == {"args": HOSTILE, "kwargs": kwargs}
    assert status["idempotency_key"] == HOSTILE[0]
    shown_error = json.loads(cli("status", error_id, "--json", env=env).stdout)
    assert shown_error["error"]["message"] == HOSTILE[0] + HOSTILE[-1]
    steps = await store.steps_of(wf)
    assert steps[0]["name"] == HOSTILE[1]
    listed = cli("list", "--queue", QUEUE, "--json", "--limit", "100", env=env)
    assert listed.returncode == 0, listed.stderr
    assert job_id in {row["id"] for row in json.loads(listed.stdout)}
    # People see the SQL-looking strings as they are too.
    table = cli("status", error_id, env=env)
    assert table.returncode == 0 and HOSTILE[0] in table.stdout
    # A hostile queue filter is a value, not SQL: no match, no error.
    nothing = cli("list", "--queue", HOSTILE[0], "--json", env=env)
    assert nothing.returncode == 0, nothing.stderr
    assert json.loads(nothing.stdout) == []
    bad_id = cli("status", HOSTILE[0], env=env)
    assert bad_id.returncode != 0
    assert bad_id.stderr.strip().count("\n") == 0, "one clean line, no traceback"


async def test_queue_and_function_names_are_validated(store: PostgresStore) -> None:
    for bad in ("", " ", "a b", "x'; DROP TABLE y; --", "-leading", "q" * 129, "naïve", "a\nb"):
        with pytest.raises(ConfigurationError):
            echo.options(queue=bad)
        with pytest.raises(ConfigurationError):
            Worker([bad])
    # A row naming a hostile function is failed without importing anything.
    name = "x'; DROP TABLE workflows.executions; --:f"
    execution_id = await insert_raw(store, "job", name, "{}", 3)
    async with running(QUEUE):
        status = await wait_status(store, execution_id, {"failed"})
    assert status["attempts"] == 1
    assert status["error"]["type"] == "FunctionNotFound"
    assert name.partition(":")[0] in status["error"]["message"]
    assert status["name"] == name


async def test_payloads_over_the_limit_are_refused_at_enqueue(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_MAX_PAYLOAD_BYTES", "1000")
    before = await store.pool.fetchval("SELECT count(*) FROM workflows.executions")
    with pytest.raises(SerializationError, match="WORKFLOWS_MAX_PAYLOAD_BYTES"):
        await echo.queue("x" * 1000)
    with pytest.raises(SerializationError, match="WORKFLOWS_MAX_PAYLOAD_BYTES"):
        await signal_echo.queue("x" * 1000)
    with pytest.raises(SerializationError, match="WORKFLOWS_MAX_PAYLOAD_BYTES"):
        await echo.queue_many([(("x" * 600,), {}), (("y" * 1000,), {})])
    assert await store.pool.fetchval("SELECT count(*) FROM workflows.executions") == before
    wf = await signal_echo.queue("s")
    with pytest.raises(SerializationError, match="WORKFLOWS_MAX_PAYLOAD_BYTES"):
        await workflows.send_signal(wf, "s", "x" * 1000)
    assert await store.pool.fetchval("SELECT count(*) FROM workflows.workflow_signals") == 0
    # Just under the limit is fine.
    assert await echo.queue("x" * 900)


async def test_an_execution_left_running_here_by_a_lost_reply_is_freed(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim that committed while its reply was lost: the database says this (live,
    # beating) worker runs the job, the worker knows nothing of it. No peer would recover it.
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.1")
    worker = await start_worker("work")
    job_id = await jobs_app.record.options(delay=3600).queue("lost-reply")
    await store.pool.execute(
        "UPDATE workflows.executions SET status = 'running', worker_id = $2::uuid, "
        "lease = lease + 1, attempts = attempts + 1, run_at = now() WHERE id = $1::uuid",
        job_id,
        worker.id,
    )
    status = await wait_status(store, job_id, {"completed", "failed"})
    assert status["status"] == "completed"
    # The lost attempt is not counted: the run that completed it is its first.
    assert status["attempts"] == 1
    assert jobs_app.calls.count(("record", "lost-reply")) == 1
