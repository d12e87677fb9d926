"""Claiming ahead (WORKFLOWS_WORKER_PREFETCH): claims beyond the free slots wait in the worker
for one, and start as slots free up; the worker gives back what still waits when it stops."""

from __future__ import annotations

import asyncio

import pytest

import workflows
from tests.integration import jobs_app
from tests.integration.conftest import StartWorker, until, wait_status
from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows_postgres.store import PostgresStore


async def statuses(store: PostgresStore, ids: list[str]) -> dict[str, list[str]]:
    """Execution ids by status."""
    by: dict[str, list[str]] = {}
    for i in ids:
        by.setdefault((await store.get_status(i))["status"], []).append(i)
    return by


async def gated(names: list[str]) -> dict[str, str]:
    """One job per name that runs until its gate opens; id -> name, in enqueue order."""
    return {await jobs_app.wait_for_gate.queue(name): name for name in names}


def open_gate(name: str) -> None:
    jobs_app.gate.setdefault(name, asyncio.Event()).set()


async def test_a_worker_claims_ahead_and_starts_those_claims_as_slots_free_up(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    jobs = await gated([f"g{i}" for i in range(6)])
    ids = list(jobs)
    worker = await start_worker("work", concurrency=2, prefetch=2)
    # Two run, two more are claimed for this worker ahead of a free slot, two stay pending.
    await until(
        lambda: len(jobs_app.entered) == 2, f"two jobs running {jobs_app.entered}", timeout=10
    )
    by = await until(lambda: _counts(store, ids, running=4, pending=2), "four claimed, two pending")
    assert sorted(by["running"]) == sorted(ids[:4]), "claimed in enqueue order"
    assert jobs_app.entered == [jobs[i] for i in ids[:2]], "only two run at once"
    # The two held here without running show in the worker's metrics.
    assert b"\nworkflows_claims_waiting 2.0\n" in worker.metrics.render()
    # Each slot that frees takes the next claim waiting here, without waiting for a claim.
    for n, i in enumerate(ids, start=1):
        open_gate(jobs[i])
        await wait_status(store, i, {"completed"})
        await until(lambda n=n: len(jobs_app.entered) >= min(n + 2, 6), f"job {n + 2} started")
    assert jobs_app.entered == [jobs[i] for i in ids]
    assert b"\nworkflows_claims_waiting 0.0\n" in worker.metrics.render()
    for i in ids:
        status = await store.get_status(i)
        assert status["attempts"] == 1, "every attempt counted once, a claim ahead too"


async def _counts(
    store: PostgresStore, ids: list[str], *, running: int, pending: int
) -> dict[str, list[str]] | None:
    by = await statuses(store, ids)
    ok = len(by.get("running", [])) == running and len(by.get("pending", [])) == pending
    return by if ok else None


async def test_claims_waiting_for_a_slot_go_back_uncounted_when_the_worker_stops(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    jobs = await gated(["first", "second", "third"])
    ids = list(jobs)
    worker = await start_worker("work", concurrency=1, prefetch=2)
    await until(lambda: _counts(store, ids, running=3, pending=0), "one running, two ahead")
    await until(lambda: jobs_app.entered == ["first"], "the first running")
    worker.stop()
    for i in ids[1:]:
        status = await wait_status(store, i, {"pending"})
        assert status["attempts"] == 0, "given back never run: the attempt does not count"
    open_gate("first")
    await wait_status(store, ids[0], {"completed"})
    assert jobs_app.entered == ["first"], "a stopping worker starts none of what waited"


async def test_a_claim_cancelled_while_it_waits_for_a_slot_is_cancelled_without_running(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    jobs = await gated(["running", "waiting"])
    running, waiting = list(jobs)
    await start_worker("work", concurrency=1, prefetch=1)
    await until(lambda: _counts(store, [running, waiting], running=2, pending=0), "both claimed")
    await until(lambda: jobs_app.entered == ["running"], "the first running")
    assert await workflows.cancel(waiting) == "cancelling"
    status = await wait_status(store, waiting, {"cancelled"})
    assert status["error"]["type"] == "ExecutionCancelledError"
    assert jobs_app.entered == ["running"], "the cancelled claim ran none of its code"
    assert (await store.get_status(running))["status"] == "running"
    open_gate("running")
    await wait_status(store, running, {"completed"})


def test_claims_ahead_are_off_by_default() -> None:
    assert Settings().worker_prefetch == 0


@pytest.mark.parametrize("raw", ["-1", "many", "1.5", "10001", "99999999999"])
def test_a_bad_prefetch_setting_is_refused_naming_its_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_PREFETCH", raw)
    with pytest.raises(ConfigurationError, match="WORKFLOWS_WORKER_PREFETCH"):
        Settings.from_env()


@pytest.mark.parametrize("prefetch", [-1, 10_001, 2**40])
def test_a_prefetch_out_of_range_in_code_is_refused(prefetch: int) -> None:
    # A claim's limit past the database's integer would fail every round of the worker.
    from workflows_worker.worker import Worker

    with pytest.raises(ConfigurationError, match="prefetch must be from 0 to 10,000"):
        Worker(["work"], settings=Settings(), prefetch=prefetch)
