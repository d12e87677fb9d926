"""workflows.Client and workflows.configure() on a real PostgreSQL: one process using several
databases and schemas at once, each through its own connections."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

import workflows
from currant.testing.server import Databases
from tests.integration import jobs_app, workflows_app
from tests.integration.conftest import StartWorker, until
from workflows import Client, ConfigurationError, ExecutionNotFoundError, activity, workflow
from workflows.config import Settings
from workflows_postgres import client as default_stores

OTHER_SCHEMA = "tenant_b"


@pytest.fixture(autouse=True)
def _unconfigured() -> Iterator[None]:
    workflows.configure(reset=True)
    yield
    workflows.configure(reset=True)


@pytest.fixture
def second_schema(database_url: str) -> str:
    """Schema ``tenant_b``, migrated, in the test's database beside ``workflows``."""
    workflows.migrate(database_url=database_url, schema=OTHER_SCHEMA)
    return OTHER_SCHEMA


@pytest.fixture
def second_database(pg_databases: Databases) -> Iterator[str]:
    """Another migrated database on the test server (schema ``workflows``)."""
    name = pg_databases.create(template=pg_databases.migrated_template())
    try:
        yield pg_databases.url(name)
    finally:
        pg_databases.drop(name)


@pytest.fixture
async def two_clients(
    database_url: str, second_schema: str, second_database: str
) -> AsyncIterator[tuple[Client, Client]]:
    """A client of the second schema (same database) and one of the second database."""
    async with Client(schema=second_schema) as by_schema, Client(second_database) as by_db:
        yield by_schema, by_db


def rows(url: str, schema: str) -> list[str]:
    """The first argument of every execution in ``schema`` of ``url``, in insertion order."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            f"SELECT args->'args'->>0 FROM {schema}.executions ORDER BY created_at, id"
        ).fetchall()
    return [row[0] for row in found]


async def test_two_clients_and_the_default_enqueue_into_their_own_places_at_once(
    database_url: str, second_database: str, two_clients: tuple[Client, Client]
) -> None:
    by_schema, by_db = two_clients
    default = default_stores.async_store()
    calls = []
    for n in range(5):
        calls += [
            jobs_app.record.queue(f"default {n}"),
            by_schema.queue(jobs_app.record, f"schema {n}"),
            jobs_app.record.options(client=by_db).queue(f"database {n}"),
        ]
    ids = await asyncio.gather(*calls)
    assert len(set(ids)) == 15
    # Sync enqueues from a thread, interleaved with the async ones on the loop.
    sync_ids = await asyncio.gather(
        asyncio.to_thread(by_schema.queue_sync, jobs_app.record, "schema sync"),
        asyncio.to_thread(jobs_app.record.options(client=by_db).queue_sync, "database sync"),
        asyncio.to_thread(jobs_app.record.queue_sync, "default sync"),
    )
    many = await by_db.queue_many(jobs_app.record, [(("database many",), {})])

    assert sorted(rows(database_url, "workflows")) == sorted(
        [f"default {n}" for n in range(5)] + ["default sync"]
    )
    assert sorted(rows(database_url, OTHER_SCHEMA)) == sorted(
        [f"schema {n}" for n in range(5)] + ["schema sync"]
    )
    assert sorted(rows(second_database, "workflows")) == sorted(
        [f"database {n}" for n in range(5)] + ["database sync", "database many"]
    )
    # Each id is known where it was written, and only there.
    assert (await by_schema.get_status(ids[1]))["args"]["args"] == ["schema 0"]
    assert (await by_db.get_status(many[0]))["args"]["args"] == ["database many"]
    assert by_db.get_status_sync(sync_ids[1])["status"] == "pending"
    assert (await workflows.get_status(ids[0]))["status"] == "pending"
    with pytest.raises(ExecutionNotFoundError):
        await workflows.get_status(ids[1])
    with pytest.raises(ExecutionNotFoundError):
        await by_schema.get_status(ids[2])
    # The clients never replaced the process's default store of this loop.
    assert default_stores.async_store() is default


async def test_a_worker_serving_a_clients_schema_completes_its_job(
    database_url: str, two_clients: tuple[Client, Client], start_worker: StartWorker
) -> None:
    by_schema, _ = two_clients
    await start_worker("work", settings=by_schema.settings)
    job_id = await by_schema.queue(jobs_app.record, "done in tenant_b")
    assert await by_schema.get_result(job_id, timeout=20) == "done in tenant_b"
    assert await asyncio.to_thread(by_schema.get_result_sync, job_id, 5) == "done in tenant_b"
    assert (await by_schema.get_status(job_id))["status"] == "completed"
    assert rows(database_url, "workflows") == []


async def test_signals_and_cancels_go_to_the_clients_database(
    second_database: str, two_clients: tuple[Client, Client], start_worker: StartWorker
) -> None:
    _, by_db = two_clients
    await start_worker("orders", settings=by_db.settings)
    run = await by_db.queue(workflows_app.collect_signals, 2)
    await by_db.send_signal(run, "item", {"n": 1})
    await asyncio.to_thread(by_db.send_signal_sync, run, "item", {"n": 2})
    assert await by_db.get_result(run, timeout=20) == [{"n": 1}, {"n": 2}]
    # Not a workflow of the default database.
    with pytest.raises(workflows.WorkflowNotFoundError):
        await workflows.send_signal(run, "item", 3)

    later = await jobs_app.record.options(client=by_db, delay=3600).queue("later")
    assert await by_db.cancel(later) == "cancelled"
    assert by_db.cancel_sync(later) == "already cancelled"
    with pytest.raises(workflows.ExecutionCancelledError):
        await by_db.get_result(later, timeout=5)


async def test_configure_points_the_module_level_api_elsewhere_than_the_environment(
    database_url: str, second_schema: str, second_database: str
) -> None:
    assert Settings.current().schema == "workflows"
    workflows.configure(schema=second_schema)
    to_schema = await jobs_app.record.queue("configured schema")
    assert (await workflows.get_status(to_schema))["status"] == "pending"
    workflows.configure(database_url=second_database, schema="workflows")
    to_db = await asyncio.to_thread(jobs_app.record.queue_sync, "configured database")
    # A Client takes the process's settings (configured ones too) for what it is not given.
    async with Client(schema=second_schema, max_payload_bytes=64) as client:
        assert client.settings.database_url == second_database
        assert client.settings.max_payload_bytes == 64
        with pytest.raises(workflows.SerializationError):
            await client.queue(jobs_app.record, "x" * 100)
    workflows.configure(reset=True)
    to_env = await jobs_app.record.queue("environment")
    assert rows(database_url, OTHER_SCHEMA) == ["configured schema"]
    assert rows(second_database, "workflows") == ["configured database"]
    assert rows(database_url, "workflows") == ["environment"]
    assert (await workflows.get_status(to_env))["status"] == "pending"
    with pytest.raises(ExecutionNotFoundError):
        await workflows.get_status(to_db)


async def test_sync_client_as_a_context_manager(second_database: str) -> None:
    def use() -> str:
        with Client(database_url=second_database) as client:
            job_id = client.queue_sync(jobs_app.record.options(priority=5), "sync")
            assert client.get_status_sync(job_id)["priority"] == 5
            assert client.cancel_sync(job_id) == "cancelled"
        with pytest.raises(workflows.WorkflowsError, match="closed"):
            client.queue_sync(jobs_app.record, "after close")
        return job_id

    await asyncio.to_thread(use)
    assert rows(second_database, "workflows") == ["sync"]


@activity(queue="orders")
async def noop() -> None:
    return None


# The workflow below asks to run a step through this client: refused where it can catch it.
_STEP_CLIENT: list[Client] = []


@workflow(queue="orders")
async def step_with_client() -> str:
    try:
        await noop.options(client=_STEP_CLIENT[0]).run()
    except ConfigurationError as exc:
        return str(exc)
    return "ran"


async def test_a_client_is_refused_for_a_workflow_step(
    second_database: str, store: object, start_worker: StartWorker
) -> None:
    await start_worker("orders")
    async with Client(second_database) as client:
        _STEP_CLIENT[:] = [client]
        run = await step_with_client.queue()
        message = await workflows.get_result(run, timeout=20)
    assert "client does not apply to workflow steps" in message


async def test_bad_input_is_refused_clearly(database_url: str, second_database: str) -> None:
    with pytest.raises(ConfigurationError, match=r"Client\(\): schema='Nope!'"):
        Client(schema="Nope!")
    with pytest.raises(ConfigurationError, match=r"Client\(\): unknown setting 'databse_url'"):
        Client(databse_url=database_url)
    with pytest.raises(ConfigurationError, match=r"Client\(\): max_payload_bytes=0"):
        Client(max_payload_bytes=0)
    with pytest.raises(ConfigurationError, match=r"client must be a workflows\.Client, got str"):
        jobs_app.record.options(client="elsewhere")  # type: ignore[arg-type]
    async with Client(second_database) as client:
        with pytest.raises(workflows.WorkflowsError, match="is an @activity"):
            await client.queue(noop)
        with pytest.raises(ConfigurationError, match="takes a @job or @workflow function"):
            await client.queue(print)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="queue_sync"):
            with psycopg.connect(second_database) as conn:
                await jobs_app.record.options(client=client, conn=conn).queue("x")
    with pytest.raises(workflows.WorkflowsError, match="closed"):
        await client.queue(jobs_app.record, "after close")
    await client.aclose()  # idempotent
    assert "closed" in repr(client)


async def test_an_unreachable_database_is_an_error_without_its_password(
    database_url: str,
) -> None:
    url = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    client = Client(url)
    assert "s3cret" not in repr(client)
    assert "s3cret" not in repr(client.settings)
    try:
        with pytest.raises(workflows.DatabaseUnavailableError) as info:
            await client.queue(jobs_app.record, "x")
        assert "s3cret" not in str(info.value)
        with pytest.raises(workflows.DatabaseUnavailableError) as info:
            await asyncio.to_thread(client.get_status_sync, "00000000-0000-0000-0000-000000000000")
        assert "s3cret" not in str(info.value)
    finally:
        await client.aclose()
    assert dataclasses.replace(client.settings).database_url == url


def sessions_on(url: str) -> int:
    """Other sessions connected to the database of ``url``."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_closing_a_client_closes_its_pool_and_every_threads_connection(
    second_database: str,
) -> None:
    client = Client(second_database)
    await client.queue(jobs_app.record, "async")
    await asyncio.gather(
        *(asyncio.to_thread(client.queue_sync, jobs_app.record, f"thread {n}") for n in range(3))
    )
    assert sessions_on(second_database) >= 2
    await client.aclose()
    assert await until(lambda: sessions_on(second_database) == 0, "the client's sessions to end")


def test_closing_a_client_whose_event_loop_stopped_ends_every_session(
    second_database: str,
) -> None:
    # Its pool and the connection single enqueues use belong to a loop that no longer runs:
    # close() ends them at once. (The enqueue connection was left open.)
    client = Client(second_database)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(client.queue(jobs_app.record, "on a loop that stops"))
        assert sessions_on(second_database) >= 2  # the pool's and the enqueue connection
        client.close()
        for _ in range(200):
            if sessions_on(second_database) == 0:
                break
            time.sleep(0.05)
        assert sessions_on(second_database) == 0
    finally:
        loop.close()
