"""Hostile conditions at the edges, against a real PostgreSQL: roles without privileges, an
unmigrated database, bad settings, missing workflows. Every failure is one line without a
password, with an exit code that says which kind it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import workflows
from tests.integration import jobs_app
from tests.integration.conftest import StartWorker
from workflows import workflow
from workflows.errors import (
    ExecutionNotFoundError,
    PermissionDeniedError,
    SignalError,
    WorkflowNotFoundError,
    WorkflowsError,
)
from workflows_postgres.migrate import available_migrations, latest_version

BIN = Path(sys.executable).parent
PASSWORD = "hostile-Pa55word"
QUEUE = "hostile"


@workflow(queue=QUEUE, timeout=3600)
async def hour_long() -> None:
    return None


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=60
    )


def assert_one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert PASSWORD not in result.stderr
    return result.stderr


def env_with(url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
    env["WORKFLOWS_DATABASE_URL"] = url
    env.update({"WORKFLOWS_" + k.upper(): v for k, v in settings.items()})
    return env


@pytest.fixture
def unprivileged(empty_database_url: str) -> Iterator[str]:
    """The URL, with a password, of a role that may connect to the database and no more."""
    role = f"hostile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'".encode())
    parts = urlsplit(empty_database_url)
    host = parts.netloc.rpartition("@")[2]
    yield urlunsplit((parts.scheme, f"{role}:{PASSWORD}@{host}", parts.path, parts.query, ""))
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(f"DROP OWNED BY {role} CASCADE".encode())
        admin.execute(f"DROP ROLE {role}".encode())


# ---- migrate -------------------------------------------------------------------------------


def test_cli_migrate_as_a_role_without_privileges_is_one_line(unprivileged: str) -> None:
    result = run("workflows", "migrate", env=env_with(unprivileged))
    stderr = assert_one_clean_line(result)
    assert result.returncode == 1
    assert "cannot migrate schema 'workflows'" in stderr and "permission denied" in stderr


def test_python_migrate_as_a_role_without_privileges_raises_permission_denied(
    unprivileged: str,
) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        workflows.migrate(unprivileged)
    message = str(caught.value)
    assert isinstance(caught.value, WorkflowsError)
    assert "permission denied" in message and len(message.splitlines()) == 1
    assert PASSWORD not in message


def test_python_migrate_migrates_an_empty_database(empty_database_url: str) -> None:
    # Numbered with gaps where they were reserved for parallel work: every one there is.
    everything = [m.version for m in available_migrations()]
    # WORKFLOWS_DATABASE_URL (set by the fixture) by default, the arguments when given.
    assert workflows.migrate() == everything
    assert workflows.migrate() == []
    assert workflows.migrate_sync(empty_database_url, "second") == everything
    with psycopg.connect(empty_database_url) as conn:
        versions = conn.execute(
            "SELECT (SELECT max(version) FROM workflows.schema_migrations),"
            " (SELECT max(version) FROM second.schema_migrations)"
        ).fetchone()
    assert versions == (latest_version(), latest_version())


def test_python_migrate_refuses_a_reserved_schema_and_an_unreachable_database() -> None:
    with pytest.raises(workflows.ConfigurationError, match="reserved"):
        workflows.migrate("postgresql://nobody@127.0.0.1:1/db", "public")
    with pytest.raises(workflows.DatabaseUnavailableError) as caught:
        workflows.migrate(f"postgresql://bob:{PASSWORD}@127.0.0.1:1/db")
    assert PASSWORD not in str(caught.value)


# ---- other commands, exit codes --------------------------------------------------------------


def test_commands_as_a_role_without_privileges_are_one_line(
    empty_database_url: str, unprivileged: str
) -> None:
    workflows.migrate(empty_database_url)
    env = env_with(unprivileged)
    for args in (
        ("workflows", "list"),
        ("workflows", "status", str(uuid.uuid4())),
        ("currant", "worker", "-q", QUEUE, "--burst"),
    ):
        result = run(*args, env=env)
        stderr = assert_one_clean_line(result)
        assert "permission denied" in stderr, (args, stderr)


def test_an_unmigrated_database_exits_3_and_a_usage_error_still_2(empty_database_url: str) -> None:
    env = env_with(empty_database_url)
    for args in (
        ("workflows", "list"),
        ("workflows", "status", str(uuid.uuid4())),
        ("currant", "worker", "-q", QUEUE),
    ):
        result = run(*args, env=env)
        assert_one_clean_line(result)
        assert result.returncode == 3, (args, result.stderr)
        assert "run `workflows migrate`" in result.stderr
    assert run("workflows", "list", "--limit", "0", env=env).returncode == 2


def test_a_bad_setting_is_one_line_naming_it(empty_database_url: str) -> None:
    for settings, named in (
        ({"worker_heartbeat_interval": "20"}, "WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT (30)"),
        ({"default_timeout": "inf"}, "WORKFLOWS_DEFAULT_TIMEOUT"),
        ({"schema": "pg_mine"}, "WORKFLOWS_SCHEMA"),
    ):
        env = env_with(empty_database_url, **settings)
        for args in (("workflows", "migrate"), ("currant", "worker", "-q", QUEUE)):
            result = run(*args, env=env)
            assert named in assert_one_clean_line(result), (args, result.stderr)
            assert result.returncode == 1


# ---- signals ---------------------------------------------------------------------------------


async def test_send_signal_raises_workflow_not_found_for_every_missing_workflow(
    database_url: str,
) -> None:
    for missing in ("not-a-uuid", str(uuid.uuid4())):
        with pytest.raises(WorkflowNotFoundError, match="no workflow") as caught:
            await workflows.send_signal(missing, "go", 1)
        # One type for callers that caught either before.
        assert isinstance(caught.value, SignalError) and isinstance(
            caught.value, ExecutionNotFoundError
        )
        with pytest.raises(WorkflowNotFoundError, match="no workflow"):
            workflows.send_signal_sync(missing, "go", 1)
    # A job's id is no workflow's either: the same one exception, saying what the id is.
    job_id = await jobs_app.record.options(delay=3600).queue("not a workflow")
    with pytest.raises(WorkflowNotFoundError, match=r"no workflow .* it is a job"):
        await workflows.send_signal(job_id, "go", 1)
    with pytest.raises(WorkflowNotFoundError, match=r"no workflow .* it is a job"):
        workflows.send_signal_sync(job_id, "go", 1)


# ---- status ----------------------------------------------------------------------------------


async def test_status_shows_a_workflows_declared_timeout(database_url: str) -> None:
    wf = hour_long.queue_sync()
    many = await hour_long.queue_many([((), {})])
    short = await hour_long.options(timeout=0.25).queue()
    job_id = await jobs_app.record.options(delay=3600).queue("a job")
    env = env_with(database_url)

    shown = json.loads(run("workflows", "status", wf, "--json", env=env).stdout)
    assert shown["timeout"] == 3600
    assert "3600" in run("workflows", "status", wf, env=env).stdout
    assert (await workflows.get_status(many[0]))["timeout"] == 3600
    assert workflows.get_status_sync(short)["timeout"] == 0.25
    assert (await workflows.get_status(job_id))["timeout"] == 300
    listed = json.loads(run("workflows", "list", "--queue", QUEUE, "--json", env=env).stdout)
    assert sorted(row["timeout"] for row in listed) == [0.25, 3600, 3600]


# ---- metrics server settings -----------------------------------------------------------------


async def test_worker_serves_metrics_on_the_host_and_free_port_from_the_environment(
    start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_METRICS_HOST", "127.0.0.1")
    monkeypatch.setenv("WORKFLOWS_WORKER_METRICS_PORT", "0")
    worker = await start_worker(QUEUE)
    server = worker._server
    assert server is not None
    assert server.host == "127.0.0.1"
    assert server.port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as answer:
        assert answer.status == 200
