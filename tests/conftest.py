"""Fixtures shared by tests/unit, tests/integration and tests/chaos.

The server starts only when a test asks for ``pg_server`` (directly or through
``database_url``/``empty_database_url``), so tests/unit never starts one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from currant.testing.server import Databases, server

_TESTS = Path(__file__).parent
_MARKED_FOLDERS = {
    "integration": pytest.mark.integration,
    "kit": pytest.mark.integration,
    "chaos": pytest.mark.chaos,
    "browser": pytest.mark.browser,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The folder decides: `-m "not chaos"` works without a decorator on every test.
    for item in items:
        try:
            folder = item.path.relative_to(_TESTS).parts[0]
        except (ValueError, IndexError):
            continue
        marker = _MARKED_FOLDERS.get(folder)
        if marker is not None:
            item.add_marker(marker)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """An admin DSN (``postgresql://`` URL) to a real server, for the whole session."""
    with server() as url:
        yield url


@pytest.fixture(scope="session")
def workflows_server(pg_server: str) -> str:
    """The test kit's server (its pytest plugin's fixture), served by the session's own."""
    return pg_server


@pytest.fixture(scope="session")
def pg_databases(pg_server: str) -> Iterator[Databases]:
    """Creates and drops databases on the test server (and holds the migrated template)."""
    databases = Databases(pg_server)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def database_url(pg_databases: Databases, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated database of this test's own (schema ``workflows``), dropped afterwards.

    Also set as ``WORKFLOWS_DATABASE_URL``.
    """
    name = pg_databases.create(template=pg_databases.migrated_template())
    url = pg_databases.url(name)
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", url)
    try:
        yield url
    finally:
        pg_databases.drop(name)


@pytest.fixture
def empty_database_url(pg_databases: Databases, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of this test's own with no migration applied; also ``WORKFLOWS_DATABASE_URL``."""
    name = pg_databases.create()
    url = pg_databases.url(name)
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", url)
    try:
        yield url
    finally:
        pg_databases.drop(name)
