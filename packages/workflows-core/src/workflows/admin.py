"""Creating and upgrading the schema from Python, for installs without the CLI.

A producer-only install (``pip install workflows-postgres``) has no ``workflows migrate``
command; ``workflows.migrate()`` does the same. Core imports no driver: the installed store
(``workflows.store.backend``) does the work.
"""

from __future__ import annotations

import dataclasses

from workflows.config import Settings, validate_schema_name
from workflows.store import backend


def migrate(database_url: str | None = None, schema: str | None = None) -> list[int]:
    """Create or upgrade the schema; return the migration versions applied (empty if none).

    ``database_url`` defaults to ``WORKFLOWS_DATABASE_URL`` (unset: the embedded database) and
    ``schema`` to ``WORKFLOWS_SCHEMA``. Idempotent, and safe when several processes run it at
    once (the second waits, then finds nothing to do). It blocks: from a coroutine, call it
    through ``asyncio.to_thread``.

    Raises ``DatabaseUnavailableError`` (the database cannot be reached),
    ``PermissionDeniedError`` (the role may not create or change the schema: run it as the
    schema's owner), ``ConfigurationError`` (an invalid setting, or workflows-postgres is not
    installed); each with a one-line message that shows no password.
    """
    settings = Settings.current()
    if database_url is not None:
        settings = dataclasses.replace(settings, database_url=database_url)
    if schema is not None:
        settings = dataclasses.replace(settings, schema=validate_schema_name(schema))
    return backend("workflows.migrate()").migrate(settings)


# The `*_sync` spelling of the API's blocking calls; migrate() has no async twin.
migrate_sync = migrate
