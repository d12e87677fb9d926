"""The database roles deploy/README.md documents are enough, and no more than enough."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import workflows
from tests.integration import jobs_app
from tests.integration import workflows_app as app
from workflows.config import Settings
from workflows_postgres import client
from workflows_postgres.migrate import apply_migrations
from workflows_worker.worker import Worker

README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"
_counter = itertools.count()


def sql_blocks() -> list[str]:
    section = README.read_text().split("## Database roles", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, ""))


@pytest.fixture
def roles(empty_database_url: str) -> Iterator[tuple[str, str]]:
    n = f"{next(_counter)}_{uuid.uuid4().hex[:6]}"
    owner, worker = f"wf_owner_{n}", f"wf_worker_{n}"
    dbname = urlsplit(empty_database_url).path.lstrip("/")

    def render(block: str) -> str:
        return (
            block.replace("workflows_owner", owner)
            .replace("workflows_worker", worker)
            .replace("DATABASE app", f"DATABASE {dbname}")
        )

    first, grants = sql_blocks()
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(render(first).encode())
    apply_migrations(as_user(empty_database_url, owner))
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(render(grants).encode())
    yield owner, worker
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(f"DROP OWNED BY {owner}, {worker} CASCADE".encode())
        admin.execute(f"DROP ROLE {worker}".encode())
        admin.execute(f"DROP ROLE {owner}".encode())


async def test_documented_worker_role_runs_jobs_and_workflows(
    empty_database_url: str, roles: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, worker_role = roles
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", as_user(empty_database_url, worker_role))
    worker = Worker(["work", "orders"], settings=Settings.from_env())
    task = asyncio.create_task(worker.run())
    try:
        job = await jobs_app.record.queue("as the worker role")
        wf = await app.approval.queue("least privilege")
        await workflows.send_signal(wf, "approved", {"approved": True})
        assert await workflows.get_result(job, timeout=30) == "as the worker role"
        assert (await workflows.get_result(wf, timeout=30))["status"] == "approved"
        # Fleet-wide upkeep needs the lead: the role may take it (leader, leader_terms).
        with psycopg.connect(empty_database_url, autocommit=True) as admin:
            leader = admin.execute(
                "SELECT worker_id::text FROM workflows.leader WHERE expires_at > now()"
            ).fetchone()
        assert leader == (worker.id,)
        # And the flow-control settings are the role's to read and change.
        await workflows.queues.set_limit("work", concurrency=3)
        assert (await workflows.queues.get("work"))["concurrency"] == 3
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await client.reset_async()
        client.reset_sync()

    with psycopg.connect(as_user(empty_database_url, worker_role), autocommit=True) as conn:
        for statement in (
            "DROP TABLE workflows.executions",
            "TRUNCATE workflows.executions",
            "DELETE FROM workflows.schema_migrations",
            "CREATE TABLE workflows.intruder (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
