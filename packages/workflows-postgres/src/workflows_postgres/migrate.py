"""Numbered, forward-only migrations, safe when several ``migrate`` run at once."""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from importlib import resources

from workflows.config import validate_schema_name
from workflows.errors import SchemaNotReadyError
from workflows_postgres.connect import connect_sync
from workflows_postgres.queries import Queries, quote_ident

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("workflows_postgres.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def latest_version() -> int:
    return available_migrations()[-1].version


def render(sql: str, schema: str) -> str:
    """A migration's text for one schema: its name and its notification channels."""
    q = Queries.for_schema(schema)
    return (
        sql.replace("{s}", quote_ident(schema))
        .replace("{work}", q.work_channel)
        .replace("{done}", q.done_channel)
        .replace("{cancel}", q.cancel_channel)
    )


def advisory_key(schema: str) -> int:
    # A stable 32-bit key per schema, so two schemas in one database migrate independently.
    return zlib.crc32(f"workflows.migrate:{schema}".encode())


def apply_migrations(dsn: str, schema: str = "workflows") -> list[int]:
    """Apply the pending migrations in order; return the versions applied (empty if none)."""
    schema = validate_schema_name(schema)
    s = quote_ident(schema)
    applied: list[int] = []
    with connect_sync(dsn, autocommit=True) as conn:
        # Session-level lock: a second migrate waits here, then finds nothing left to do.
        conn.execute("SELECT pg_advisory_lock(%s)", (advisory_key(schema),))
        try:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute(f"SELECT version FROM {s}.schema_migrations").fetchall()
            done = {row[0] for row in rows}
            for migration in available_migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(render(migration.sql, schema).encode())
                    conn.execute(
                        f"INSERT INTO {s}.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(schema),))
    return applied


def schema_error(schema: str, current: int | None) -> SchemaNotReadyError:
    need = latest_version()
    if current is None:
        return SchemaNotReadyError(
            f"database is not migrated (schema {schema!r} not found): run `workflows migrate`"
        )
    if current > need:
        return SchemaNotReadyError(
            f"database schema {schema!r} is at version {current}, newer than this code knows "
            f"({need}): upgrade workflows"
        )
    return SchemaNotReadyError(
        f"database schema {schema!r} is at version {current}, this code needs {need}: "
        "run `workflows migrate`"
    )
