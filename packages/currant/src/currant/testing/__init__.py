"""The test kit's runtime: an :class:`Environment` (a schema of its own on a real PostgreSQL, a
worker in the test's event loop, virtual time), its synchronous twin, and the servers tests
use. The pytest plugin (``currant.pytest_plugin``, registered as ``workflows``) serves them as
fixtures; the pure parts of the kit (replaying recorded histories) are ``workflows.testing``.
"""

from currant.testing.environment import Environment, TestEnvironmentError
from currant.testing.sync import SyncEnvironment

__all__ = ["Environment", "SyncEnvironment", "TestEnvironmentError"]
