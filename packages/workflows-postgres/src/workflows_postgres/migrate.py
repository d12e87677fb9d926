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
from workflows_postgres.queries import Queries, to_psycopg

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
    return Queries.for_schema(schema).render(sql)


def advisory_key(schema: str) -> int:
    # A stable 32-bit key per schema, so two schemas in one database migrate independently.
    return zlib.crc32(f"workflows.migrate:{schema}".encode())


def apply_migrations(dsn: str, schema: str = "workflows") -> list[int]:
    """Apply the pending migrations in order; return the versions applied (empty if none)."""
    schema = validate_schema_name(schema)
    q = Queries.for_schema(schema)

    def sql(name: str) -> str:
        return to_psycopg(q.sql(name))

    applied: list[int] = []
    key = {"p1": advisory_key(schema)}
    with connect_sync(dsn, autocommit=True) as conn:
        conn.execute(sql("migrate_lock"), key)
        try:
            conn.execute(sql("create_schema"))
            conn.execute(sql("create_migrations_table"))
            done = {row[0] for row in conn.execute(sql("applied_versions")).fetchall()}
            for migration in available_migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(q.render(migration.sql).encode())
                    conn.execute(
                        sql("record_migration"), {"p1": migration.version, "p2": migration.name}
                    )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                applied.append(migration.version)
        finally:
            conn.execute(sql("migrate_unlock"), key)
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
