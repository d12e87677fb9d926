"""pytest fixtures for testing jobs and workflows (the `workflows` plugin, registered with
pytest by currant's ``pytest11`` entry point; ``pip install 'currant[testing]'``).

- ``workflows_env``: an :class:`~currant.testing.Environment` for ``async def`` tests (needs
  pytest-asyncio, which the extra brings);
- ``workflows_env_sync``: a :class:`~currant.testing.SyncEnvironment` for plain tests;
- ``workflows_server``: the admin URL of the session's PostgreSQL (see
  ``currant.testing.server`` for how it is found).

Mark a test ``@pytest.mark.workflows(queues=[...], time_skipping=False, concurrency=N,
timeout=S)`` to change how its environment is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from currant.testing.environment import Environment
from currant.testing.sync import SyncEnvironment

try:
    import pytest_asyncio

    HAVE_PYTEST_ASYNCIO = True
except ImportError:  # currant without its `testing` extra: every pytest run still loads this
    HAVE_PYTEST_ASYNCIO = False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "workflows(queues=None, time_skipping=True, concurrency=10, timeout=30): how the "
        "workflows_env "
        "and workflows_env_sync fixtures build the test's environment",
    )


@pytest.fixture(scope="session")
def workflows_server() -> Iterator[str]:
    """The admin URL of a real PostgreSQL, for the whole session."""
    from currant.testing.server import server

    with server() as url:
        yield url


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("workflows")
    return dict(marker.kwargs) if marker is not None else {}


if HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def workflows_env(
        request: pytest.FixtureRequest, workflows_server: str
    ) -> AsyncIterator[Environment]:
        """A schema of the test's own, a worker in the test's event loop, virtual time."""
        async with Environment(database_url=workflows_server, **_options(request)) as env:
            yield env

else:

    @pytest.fixture
    def workflows_env() -> None:
        """Needs pytest-asyncio (the fixture runs a worker in the test's event loop)."""
        pytest.fail("workflows_env needs pytest-asyncio: pip install 'currant[testing]'")


@pytest.fixture
def workflows_env_sync(
    request: pytest.FixtureRequest, workflows_server: str
) -> Iterator[SyncEnvironment]:
    """The same for plain ``def`` tests (the environment's loop on a thread)."""
    with SyncEnvironment(database_url=workflows_server, **_options(request)) as env:
        yield env
