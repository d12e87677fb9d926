"""Fixtures for the crash tests: the seed, a database with the app's tables, a fleet of workers.

``CHAOS_SEED`` replays a run's workload and kill schedule (the processes' timing is the OS's);
``CHAOS_ROUNDS`` sets how many rounds of kills the random-kill test runs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import Db, Fleet, fleet_of, prepare
from workflows_postgres import client


@pytest.fixture(scope="session")
def chaos_seed() -> int:
    raw = os.environ.get("CHAOS_SEED", "").strip()
    seed = int(raw) if raw else secrets.randbelow(1_000_000)
    print(f"\nchaos seed {seed} (CHAOS_SEED={seed} replays this workload and schedule)")
    return seed


@pytest.fixture(autouse=True)
def _fresh_client() -> Iterator[None]:
    yield
    # The tests enqueue through the process's default store; the next test has another database.
    client.reset_sync()


@pytest.fixture
def chaos_db(database_url: str) -> Iterator[Db]:
    """The test's database (``WORKFLOWS_DATABASE_URL``) with the side-effect tables."""
    db = prepare(database_url)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def fleet(database_url: str, chaos_db: Db, tmp_path: Path) -> Iterator[Fleet]:
    """Worker processes on the test's database; every one is gone after the test."""
    with fleet_of(database_url, tmp_path, chaos_db) as workers:
        yield workers
