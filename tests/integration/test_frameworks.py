"""The framework examples under examples/ (imported from there, so what is shown is what is
tested): enqueueing in a Django or SQLAlchemy transaction, and a FastAPI app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from examples.django import orders as django_orders
from examples.fastapi import app as fastapi_app
from examples.sqlalchemy import orders as sqlalchemy_orders

import workflows
from currant.testing.server import Databases
from tests.integration.conftest import StartWorker, until
from workflows.config import Settings


def executions(url: str) -> list[tuple[str, list[object]]]:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT name, args->'args' FROM workflows.executions ORDER BY created_at, id"
        ).fetchall()
    return [(name, args) for name, args in found]


def orders(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (i, item) for i, item in conn.execute("SELECT id, item FROM shop_order ORDER BY id")
        ]


# ---- Django ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_database(pg_databases: Databases) -> Iterator[str]:
    """Django's settings are configured once per process: one database for its tests."""
    name = pg_databases.create(template=pg_databases.migrated_template())
    url = pg_databases.url(name)
    django_orders.setup(url)
    try:
        yield url
    finally:
        from django.db import connection

        connection.close()
        pg_databases.drop(name)


@pytest.fixture
def django_db(django_database: str) -> Iterator[str]:
    yield django_database
    with psycopg.connect(django_database) as conn:
        conn.execute("TRUNCATE shop_order, workflows.executions CASCADE")


def test_django_committed_block_enqueues_and_rolled_back_one_nothing(django_db: str) -> None:
    name = "examples.django.orders:send_confirmation"
    order_id = django_orders.place_order("a book")
    assert orders(django_db) == [(order_id, "a book")]
    assert executions(django_db) == [(name, [order_id])]

    with pytest.raises(RuntimeError, match="payment declined"):
        django_orders.place_order("a lamp", fail_after_enqueue=True)
    assert orders(django_db) == [(order_id, "a book")]
    assert executions(django_db) == [(name, [order_id])]


async def test_django_enqueued_job_is_run_by_a_worker(
    django_db: str, start_worker: StartWorker
) -> None:
    order_id = await asyncio.to_thread(django_orders.place_order, "a chair")
    [(_, [enqueued])] = executions(django_db)
    assert enqueued == order_id
    settings = Settings.from_env({"WORKFLOWS_DATABASE_URL": django_db})
    await start_worker("emails", settings=settings)
    async with workflows.Client(django_db) as client:
        with psycopg.connect(django_db) as conn:
            row = conn.execute("SELECT id FROM workflows.executions").fetchone()
        assert row is not None
        result = await client.get_result(str(row[0]), timeout=20)
    assert result == f"confirmation sent for order {order_id}"


# ---- SQLAlchemy ------------------------------------------------------------------------------


def test_sqlalchemy_session_commit_enqueues_and_rollback_nothing(database_url: str) -> None:
    sessions = sqlalchemy_orders.sync_sessions(database_url)
    name = "examples.sqlalchemy.orders:send_confirmation"
    try:
        kept = sqlalchemy_orders.place_order(sessions, "a book")
        with pytest.raises(RuntimeError, match="payment declined"):
            sqlalchemy_orders.place_order(sessions, "a lamp", fail=True)
    finally:
        sessions.kw["bind"].dispose()
    assert orders(database_url) == [(kept, "a book")]
    assert executions(database_url) == [(name, [kept])]


async def test_sqlalchemy_async_session_commit_enqueues_and_rollback_nothing(
    database_url: str, start_worker: StartWorker
) -> None:
    # The table, through the sync engine (create_all is sync).
    sqlalchemy_orders.sync_sessions(database_url).kw["bind"].dispose()
    engine, sessions = sqlalchemy_orders.async_sessions(database_url)
    name = "examples.sqlalchemy.orders:send_confirmation"
    try:
        kept = await sqlalchemy_orders.place_order_async(sessions, "a book")
        with pytest.raises(RuntimeError, match="payment declined"):
            await sqlalchemy_orders.place_order_async(sessions, "a lamp", fail=True)
    finally:
        await engine.dispose()
    assert orders(database_url) == [(kept, "a book")]
    assert executions(database_url) == [(name, [kept])]
    await start_worker("emails")
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id FROM workflows.executions").fetchone()
    assert row is not None
    assert await workflows.get_result(str(row[0]), timeout=20) == (
        f"confirmation sent for order {kept}"
    )


# ---- FastAPI ---------------------------------------------------------------------------------


async def test_fastapi_enqueues_in_a_request_and_closes_its_client_with_the_app(
    database_url: str, start_worker: StartWorker
) -> None:
    app = fastapi_app.create_app()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as http,
    ):
        client: workflows.Client = app.state.workflows
        answer = await http.post("/signups", json={"email": "a@b.c"})
        assert answer.status_code == 202
        job_id = answer.json()["job_id"]
        assert (await http.get(f"/jobs/{job_id}")).json() == {"status": "pending", "result": None}
        await start_worker("emails")

        async def done() -> bool:
            status = (await http.get(f"/jobs/{job_id}")).json()
            return bool(status["status"] == "completed") and status["result"] == "welcomed a@b.c"

        await until(done, "the job to complete")
        missing = await http.get("/jobs/00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404
        bad = await http.post("/signups", json={"mail": "a@b.c"})
        assert bad.status_code == 422
    assert executions(database_url) == [("examples.fastapi.app:send_welcome", ["a@b.c"])]
    # The lifespan closed the client: no connection of it is left, and it refuses more work.
    assert "closed" in repr(client)
    with pytest.raises(workflows.WorkflowsError, match="closed"):
        await client.get_status(job_id)
