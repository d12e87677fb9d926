"""The test kit as a user meets it: the `workflows` pytest plugin's fixtures on a real
PostgreSQL, a real worker in the test's event loop, and virtual time."""

from __future__ import annotations

import os
import time

import pytest

import workflows
from currant.testing import Environment, SyncEnvironment, TestEnvironmentError
from tests.kit import orders_app as app


async def test_a_job_runs_to_its_result(workflows_env: Environment) -> None:
    result = await workflows_env.run(app.send_email, "a@b.c", subject="Hi", body="...")
    assert result == "sent 'Hi' to a@b.c"


async def test_a_week_long_sleep_and_a_day_long_signal_timeout_take_no_time(
    workflows_env: Environment,
) -> None:
    started_at = await workflows_env.now()
    began = time.monotonic()
    result = await workflows_env.run(app.process_order, "o-1", 100, "a@b.c", "tok")
    took = time.monotonic() - began
    assert result == {
        "order_id": "o-1",
        "transaction_id": "tx-tok-100",
        "approval": {"approved": False, "why": "no answer in a day"},
    }
    # The clock went through the week and the day; the wall clock did not.
    assert (await workflows_env.now() - started_at).total_seconds() >= 8 * 86400
    assert took < 2.0, took
    steps = await workflows_env.history(await app.process_order.queue("o-2", 1, "x", "t"))
    assert steps["execution"]["name"] == app.process_order.path


async def test_a_signal_from_the_test_reaches_the_waiting_workflow(
    workflows_env: Environment,
) -> None:
    order = await app.process_order.queue("o-3", 5, "a@b.c", "tok")
    # Signalled before the week is over (the clock skips only while nothing can happen).
    await workflows.send_signal(order, "approved", {"approved": True})
    result = await workflows_env.result(order)
    assert result["approval"] == {"approved": True}


async def test_retry_backoff_is_skipped(
    workflows_env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.attempts.clear()
    began = time.monotonic()
    assert await workflows_env.run(app.flaky_email, "k", 2) == 3
    assert time.monotonic() - began < 2.0


async def test_a_workflow_deadline_passes_on_the_virtual_clock(workflows_env: Environment) -> None:
    started_at = await workflows_env.now()
    with pytest.raises(workflows.ExecutionFailedError, match="WorkflowTimeoutError"):
        await workflows_env.run(app.waits_forever)
    assert (await workflows_env.now() - started_at).total_seconds() >= 3600


@pytest.mark.workflows(time_skipping=False)
async def test_without_skipping_time_moves_only_when_advanced(workflows_env: Environment) -> None:
    job_id = await app.send_email.options(delay=3600).queue("a@b.c", "Later", "...")
    status = await workflows.get_status(job_id)
    assert status["status"] == "pending"
    await workflows_env.advance(3600)
    assert await workflows_env.result(job_id) == "sent 'Later' to a@b.c"


@pytest.mark.workflows(queues=[])
async def test_what_code_under_test_enqueues_is_asserted_without_running_it(
    workflows_env: Environment,
) -> None:
    # No worker: welcome() itself is only enqueued; call its body directly as code under test.
    await app.welcome.fn("ada")
    found = await workflows_env.assert_enqueued(
        app.send_email,
        kwargs={"to": "ada@example.com", "subject": "Welcome", "body": "..."},
        queue="emails",
        count=1,
    )
    assert found[0]["status"] == "pending"
    with pytest.raises(AssertionError, match=r"found 0 matching, of 1: .*ada@example\.com"):
        await workflows_env.assert_enqueued(app.send_email, kwargs={"to": "bob@example.com"})
    with pytest.raises(TestEnvironmentError, match="does not serve"):
        await workflows_env.run(app.send_email, "a@b.c", "x", "y")


async def test_each_test_has_a_schema_of_its_own(workflows_env: Environment) -> None:
    assert os.environ["WORKFLOWS_SCHEMA"] == workflows_env.schema
    assert await workflows_env.enqueued() == []


def test_a_sync_test_gets_the_same(workflows_env_sync: SyncEnvironment) -> None:
    assert workflows_env_sync.run(app.send_email, "s@b.c", "Sync", "...") == "sent 'Sync' to s@b.c"
    job_id = app.send_email.queue_sync("t@b.c", "Queued", "...")
    assert workflows_env_sync.result(job_id) == "sent 'Queued' to t@b.c"
    assert len(workflows_env_sync.enqueued(app.send_email)) == 2


async def test_workflow_time_is_the_virtual_clock_and_replays(workflows_env: Environment) -> None:
    from datetime import datetime

    began = await workflows_env.now()
    report = await workflows_env.run(app.weekly_report)
    start, end = (datetime.fromisoformat(report[k]) for k in ("start", "end"))
    assert abs((start - began).total_seconds()) < 5
    assert (end - start).total_seconds() >= 7 * 86400


async def test_advance_refuses_what_is_not_a_span_of_time(workflows_env: Environment) -> None:
    before = await workflows_env.now()
    for bad in (float("nan"), float("inf"), -1, True, "60", 10**12):
        with pytest.raises(TestEnvironmentError, match="advance"):
            await workflows_env.advance(bad)  # type: ignore[arg-type]
    # Nothing moved.
    assert (await workflows_env.now() - before).total_seconds() < 60


async def test_a_start_that_fails_leaves_nothing_behind(workflows_server: str) -> None:
    before = {k: os.environ.get(k) for k in ("WORKFLOWS_DATABASE_URL", "WORKFLOWS_SCHEMA")}
    # A queue name the worker refuses: the start fails after the schema and the variables.
    env = Environment(["bad queue!"], database_url=workflows_server)
    with pytest.raises(workflows.ConfigurationError, match="queue"):
        await env.start()
    assert {k: os.environ.get(k) for k in before} == before
    import psycopg

    with psycopg.connect(workflows_server) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (env.schema,)
        ).fetchone()
    assert row == (0,)


async def test_what_configure_set_does_not_lead_the_code_under_test_elsewhere(
    workflows_server: str,
) -> None:
    # An application that configures its database in code, then tested with the kit.
    workflows.configure(
        database_url="postgresql://app@127.0.0.1:1/production", schema="app", default_retries=5
    )
    try:
        async with Environment(["emails"], database_url=workflows_server) as env:
            assert await env.run(app.send_email, "c@b.c", "Hi", "...") == "sent 'Hi' to c@b.c"
            # What does not point at a database is kept.
            assert workflows.configure().default_retries == 5
        settings = workflows.configure()
        assert (settings.database_url, settings.schema) == (
            "postgresql://app@127.0.0.1:1/production",
            "app",
        )
    finally:
        workflows.configure(reset=True)
