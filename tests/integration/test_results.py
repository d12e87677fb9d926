"""Waiting for results: many waiters share one listening connection and hold no pooled one."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import asyncpg
import pytest

import workflows
from tests.integration import jobs_app
from tests.integration.conftest import StartWorker, executions_locked, until, wait_status
from workflows.api import CallOptions
from workflows.config import Settings
from workflows.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    ExecutionNotFoundError,
)
from workflows_postgres import client, results
from workflows_postgres.store import PostgresStore

LISTENER = "workflows_done"  # the results listener's application_name: its channel


async def enqueue_record(store: PostgresStore, tag: str, delay: float | None = None) -> str:
    options = CallOptions(delay=delay)
    request = jobs_app.record.request(options, (tag,), {}, Settings.from_env())
    return await store.enqueue(request)


async def listeners(store: PostgresStore) -> list[int]:
    """The backend pids of results listeners on this database."""
    rows = await store.pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
        "AND datname = current_database()",
        LISTENER,
    )
    return [row["pid"] for row in rows]


async def test_fifty_waiters_on_a_pool_of_two_never_block_an_enqueue(
    small_store: PostgresStore, start_worker: StartWorker
) -> None:
    ids = [await enqueue_record(small_store, f"t{k}") for k in range(60)]
    waiters = [asyncio.create_task(small_store.wait_finished(i, 60)) for i in ids]
    await until(lambda: small_store.results.waiting == 60, "60 waiters registered")
    # Every waiter has looked and sleeps: an enqueue gets a pooled connection.
    late = await asyncio.wait_for(enqueue_record(small_store, "late"), 10)
    late_waiter = asyncio.create_task(small_store.wait_finished(late, 60))
    assert not any(w.done() for w in waiters)
    assert len(await listeners(small_store)) == 1
    await start_worker("work")
    done = await asyncio.wait_for(asyncio.gather(*waiters, late_waiter), 60)
    assert [d["id"] for d in done] == [*ids, late]
    assert [d["result"] for d in done] == [f"t{k}" for k in range(60)] + ["late"]
    assert small_store.results.waiting == 0


async def test_waits_begun_together_take_their_first_look_together(
    small_store: PostgresStore, database_url: str, start_worker: StartWorker
) -> None:
    # One query for all fifty, not fifty through the pool: with the table locked against
    # reads, the waiters hold one of the pool's two connections and the other stays free.
    ids = [await enqueue_record(small_store, f"t{k}") for k in range(50)]
    async with executions_locked(database_url, "ACCESS EXCLUSIVE") as blocker:
        waiters = [asyncio.create_task(small_store.wait_finished(i, 60)) for i in ids]
        looking = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND application_name <> $1"
        )
        await until(lambda: blocker.fetchval(looking, LISTENER), "the first look waiting")
        assert await asyncio.wait_for(small_store.pool.fetchval("SELECT 1"), 10) == 1
        assert await blocker.fetchval(looking, LISTENER) == 1
    await start_worker("work")
    done = await asyncio.wait_for(asyncio.gather(*waiters), 60)
    assert [d["result"] for d in done] == [f"t{k}" for k in range(50)]


async def test_result_arrives_through_the_notification(
    small_store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No tick after the first look: only the done notification of the pump can wake it.
    monkeypatch.setattr(results, "FIRST_TICK", 600.0)
    job_id = await enqueue_record(small_store, "heard")
    waiter = asyncio.create_task(small_store.wait_finished(job_id, 30))
    await until(
        lambda: small_store.results.waiting == 1 and small_store.results.listening, "listening"
    )
    await start_worker("work")
    status = await asyncio.wait_for(waiter, 20)
    assert (status["status"], status["result"]) == ("completed", "heard")


async def test_jobs_are_announced_only_while_a_results_listener_is_connected(
    small_store: PostgresStore, start_worker: StartWorker
) -> None:
    heard: list[str] = []

    def hear(conn: object, pid: int, channel: str, payload: str) -> None:
        heard.extend(results.done_ids(payload))

    # A plain session on the channel, not named as a results listener.
    conn = await asyncpg.connect(small_store.dsn)
    await conn.add_listener(small_store.q.done_channel, hear)
    try:
        await start_worker("work")
        quiet = await enqueue_record(small_store, "unheard")
        await wait_status(small_store, quiet, {"completed"})
        # A cancel is always announced, and notifications arrive in commit order: once this
        # one is heard, an announcement of the job before it would have been heard too.
        marker = await enqueue_record(small_store, "marker", delay=3600)
        await small_store.cancel(marker)
        await until(lambda: marker in heard, "the cancel's announcement")
        assert quiet not in heard
        # A results listener connected (waiting on a job that is not due): jobs are announced.
        parked = await enqueue_record(small_store, "parked", delay=3600)
        waiter = asyncio.create_task(small_store.wait_finished(parked, None))
        await until(lambda: small_store.results.listening, "a results listener")

        async def a_job_is_heard() -> bool:
            # The workers read whether a listener is connected every LISTENING_READ seconds:
            # a job that ends before they next read it may go unannounced (its waiters' tick
            # finds it), the ones after are announced.
            loud = await enqueue_record(small_store, "heard")
            await wait_status(small_store, loud, {"completed"})
            marker = await enqueue_record(small_store, "marker", delay=3600)
            await small_store.cancel(marker)
            await until(lambda: marker in heard, "the cancel's announcement")
            return loud in heard

        await until(a_job_is_heard, "a job's announcement")
        waiter.cancel()
    finally:
        await conn.close()


async def test_result_arrives_when_no_notification_is_sent(small_store: PostgresStore) -> None:
    job_id = await enqueue_record(small_store, "silent")
    waiter = asyncio.create_task(small_store.wait_finished(job_id, 30))
    await until(lambda: small_store.results.listening, "listening")
    # Finished behind the watcher's back: no notification, only the tick finds it.
    await small_store.pool.execute(
        "UPDATE workflows.executions SET status = 'completed', result = '\"quiet\"', "
        "finished_at = now() WHERE id = $1::uuid",
        job_id,
    )
    status = await asyncio.wait_for(waiter, 20)
    assert (status["status"], status["result"]) == ("completed", "quiet")


async def test_many_waiters_of_one_id_all_get_it(
    small_store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await enqueue_record(small_store, "shared")
    waiters = [asyncio.create_task(small_store.wait_finished(job_id, 30)) for _ in range(5)]
    await until(lambda: small_store.results.waiting == 5, "5 waiters")
    # One of them gives up: the others still wait on the same id.
    waiters[0].cancel()
    await until(lambda: small_store.results.waiting == 4, "the cancelled waiter gone")
    await start_worker("work")
    done = await asyncio.wait_for(asyncio.gather(*waiters[1:]), 20)
    assert {d["result"] for d in done} == {"shared"}
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]


async def test_cancelled_waiter_is_unregistered_and_the_listener_unlistens(
    small_store: PostgresStore,
) -> None:
    job_id = await enqueue_record(small_store, "never")
    waiter = asyncio.create_task(small_store.wait_finished(job_id, None))
    await until(
        lambda: small_store.results.waiting == 1 and small_store.results.listening, "listening"
    )
    pid = (await listeners(small_store))[0]
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert small_store.results.waiting == 0

    async def unlistened() -> bool:
        # The watcher's session no longer listens: nothing is queued for it.
        row = await small_store.pool.fetchrow(
            "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid
        )
        return row is not None and row["query"].startswith("UNLISTEN")

    await until(unlistened, "UNLISTEN once nobody waits")
    assert not small_store.results.listening


async def test_a_wait_after_the_listener_went_quiet_listens_again(
    small_store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await enqueue_record(small_store, "first")
    with pytest.raises(TimeoutError):
        await small_store.wait_finished(first, 0.2)
    await until(lambda: not small_store.results.listening, "UNLISTEN once nobody waits")
    # No tick: only a notification can end the second wait.
    monkeypatch.setattr(results, "FIRST_TICK", 600.0)
    second = await enqueue_record(small_store, "second")
    waiter = asyncio.create_task(small_store.wait_finished(second, 30))
    await until(lambda: small_store.results.listening, "listening again")
    await start_worker("work")
    assert (await asyncio.wait_for(waiter, 20))["result"] == "second"
    assert len(await listeners(small_store)) == 1


async def test_a_wait_that_begins_while_the_listener_unlistens_is_heard(
    small_store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The next get_result of a sequential caller often comes during the UNLISTEN's round trip
    # after the previous one: it was left unheard for LINGER (30 s).
    entered, gate = asyncio.Event(), asyncio.Event()
    unlisten = results.ResultWatcher._unlisten

    async def slow_unlisten(self: results.ResultWatcher) -> None:
        entered.set()
        await gate.wait()
        await unlisten(self)

    monkeypatch.setattr(results.ResultWatcher, "_unlisten", slow_unlisten)
    first = await enqueue_record(small_store, "first")
    with pytest.raises(TimeoutError):
        await small_store.wait_finished(first, 0.2)
    await asyncio.wait_for(entered.wait(), 10)
    second = await enqueue_record(small_store, "second")
    waiter = asyncio.create_task(small_store.wait_finished(second, 30))
    await until(lambda: small_store.results.waiting == 1, "the second wait registered")
    gate.set()
    await start_worker("work")
    assert (await asyncio.wait_for(waiter, 20))["result"] == "second"


async def test_timeout_raises_with_the_status_and_unregisters(small_store: PostgresStore) -> None:
    job_id = await enqueue_record(small_store, "slow")
    with pytest.raises(TimeoutError, match=f"execution {job_id} still pending after 0.3 s"):
        await small_store.wait_finished(job_id, 0.3)
    assert small_store.results.waiting == 0
    with pytest.raises(TimeoutError, match="after 0 s"):
        await small_store.wait_finished(job_id, 0)


@pytest.mark.parametrize("timeout", [float("nan"), "10", True, [1]])
async def test_a_timeout_that_is_no_number_is_refused(
    small_store: PostgresStore, timeout: Any
) -> None:
    job_id = await enqueue_record(small_store, "odd")
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds or None"):
        await small_store.wait_finished(job_id, timeout)
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds or None"):
        await asyncio.to_thread(client.sync_store().wait_finished, job_id, timeout)
    assert small_store.results.waiting == 0


async def test_an_infinite_timeout_waits_and_a_negative_one_looks_once(
    small_store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id = await enqueue_record(small_store, "patient")
    with pytest.raises(TimeoutError, match="still pending after -1 s"):
        await small_store.wait_finished(job_id, -1)
    waiter = asyncio.create_task(small_store.wait_finished(job_id, float("inf")))
    await start_worker("work")
    assert (await asyncio.wait_for(waiter, 20))["result"] == "patient"


async def test_unknown_or_malformed_id_is_not_found(small_store: PostgresStore) -> None:
    with pytest.raises(ExecutionNotFoundError, match="ids are UUIDs"):
        await small_store.wait_finished("not-a-uuid", 1)
    with pytest.raises(ExecutionNotFoundError):
        await small_store.wait_finished("00000000-0000-0000-0000-000000000001", 1)
    assert small_store.results.waiting == 0


async def test_closing_the_store_ends_waits_with_an_error(database_url: str) -> None:
    store = await PostgresStore.connect(Settings.from_env(), max_size=2)
    job_id = await enqueue_record(store, "orphan")
    waiter = asyncio.create_task(store.wait_finished(job_id, None))
    await until(lambda: store.results.waiting == 1, "waiting")
    await asyncio.wait_for(store.close(), 10)
    with pytest.raises(DatabaseUnavailableError, match="store was closed"):
        await asyncio.wait_for(waiter, 10)
    with pytest.raises(DatabaseUnavailableError, match="store was closed"):
        await store.wait_finished(job_id, 1)


async def test_killed_listener_reconnects_and_waiters_still_get_results(
    small_store: PostgresStore, start_worker: StartWorker
) -> None:
    ids = [await enqueue_record(small_store, f"k{k}") for k in range(10)]
    waiters = [asyncio.create_task(small_store.wait_finished(i, 60)) for i in ids]
    await until(lambda: small_store.results.waiting == 10, "10 waiters")
    await until(lambda: listeners(small_store), "a listener")
    [pid] = await listeners(small_store)
    assert await small_store.pool.fetchval("SELECT pg_terminate_backend($1)", pid)
    await until(lambda: listeners_other_than(small_store, pid), "a new listener after the kill")
    await start_worker("work")
    done = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    assert [d["result"] for d in done] == [f"k{k}" for k in range(10)]


async def listeners_other_than(store: PostgresStore, pid: int) -> bool:
    return [p for p in await listeners(store) if p != pid] != []


async def test_get_result_shares_the_default_store_listener(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    ids = [await jobs_app.record.queue(f"g{k}") for k in range(20)]
    waiters = [asyncio.create_task(workflows.get_result(i, timeout=60)) for i in ids]
    await until(lambda: listeners(store), "a listener")
    assert len(await listeners(store)) == 1
    await start_worker("work")
    assert await asyncio.wait_for(asyncio.gather(*waiters), 30) == [f"g{k}" for k in range(20)]


async def test_sync_waiters_in_many_threads_share_one_listener(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    ids = [await enqueue_record(store, f"s{k}") for k in range(8)]
    sync = client.sync_store()
    got: dict[str, Any] = {}
    errors: list[BaseException] = []

    def wait(execution_id: str) -> None:
        try:
            got[execution_id] = workflows.get_result_sync(execution_id, timeout=60)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    await until(lambda: sync.results.waiting == 8, "8 threads waiting")
    await until(lambda: listeners(store), "a listener")
    assert len(await listeners(store)) == 1
    # The sync listener survives its backend's death too.
    [pid] = await listeners(store)
    assert await store.pool.fetchval("SELECT pg_terminate_backend($1)", pid)
    await until(lambda: listeners_other_than(store, pid), "a new listener after the kill")
    assert len(await listeners(store)) == 1
    await start_worker("work")
    for t in threads:
        await asyncio.to_thread(t.join, 60)
    assert errors == []
    assert got == {i: f"s{k}" for k, i in enumerate(ids)}
    assert sync.results.waiting == 0


async def test_sync_wait_after_a_quiet_spell_hears_the_notification(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = client.sync_store()
    first = await enqueue_record(store, "sync-first")
    with pytest.raises(TimeoutError):
        await asyncio.to_thread(sync.wait_finished, first, 0.2)

    async def unlistened() -> bool:
        rows = await store.pool.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = $1", LISTENER
        )
        return len(rows) == 1 and rows[0]["query"].startswith("UNLISTEN")

    await until(unlistened, "the sync listener UNLISTENs once nobody waits")
    monkeypatch.setattr(results, "FIRST_TICK", 600.0)
    second = await enqueue_record(store, "sync-second")
    waiting = asyncio.create_task(asyncio.to_thread(sync.wait_finished, second, 30))

    async def listening_again() -> bool:
        # LISTEN, then the look at what ended meanwhile: the last query is that look.
        rows = await store.pool.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = $1", LISTENER
        )
        return len(rows) == 1 and "ANY(" in rows[0]["query"]

    await until(listening_again, "the sync listener LISTENs and looks again")
    await start_worker("work")
    assert (await asyncio.wait_for(waiting, 20))["result"] == "sync-second"


async def test_sync_timeout_and_close(database_url: str, store: PostgresStore) -> None:
    job_id = await enqueue_record(store, "sync-slow")
    sync = client.sync_store()
    with pytest.raises(TimeoutError, match=f"execution {job_id} still pending after 0.2 s"):
        await asyncio.to_thread(sync.wait_finished, job_id, 0.2)
    assert sync.results.waiting == 0
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            sync.wait_finished(job_id, None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    await until(lambda: sync.results.waiting == 1, "a thread waiting")
    client.reset_sync()
    await asyncio.to_thread(thread.join, 10)

    async def no_listener() -> bool:
        return not await listeners(store)

    await until(no_listener, "the sync listener closed")
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], DatabaseUnavailableError)
    assert "store was closed" in str(outcome[0])


_LOOPS = """
import asyncio, sys
import workflows

async def wait(execution_id):
    try:
        await workflows.get_result(execution_id, timeout=0.3)
    except TimeoutError:
        print("timed out")

for _ in range(2):
    asyncio.run(wait(sys.argv[1]))
"""


async def test_event_loops_that_end_while_the_listener_lingers_leave_no_task(
    store: PostgresStore,
) -> None:
    job_id = await enqueue_record(store, "loops")
    # Each asyncio.run() ends while its listener would linger for LINGER seconds.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "dev",
        "-c",
        _LOOPS,
        job_id,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Well under LINGER (30 s): the lingering listener must not hold the loop's end.
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["timed", "out", "timed", "out"]
    # -X dev reports tasks destroyed pending, exceptions never retrieved and connections left
    # open with where they were made (the pool's own, which the loop's end does not close,
    # predate this: only the results listener's are looked for).
    text = err.decode()
    assert "Task was destroyed" not in text and "never retrieved" not in text, text
    assert "results.py" not in text, text
