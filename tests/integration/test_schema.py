"""schema.sql is the schema the migrations build, as tools/schema_dump.py writes it.

Both tests dump with the script's own functions, so the file and the check cannot drift apart.
A new migration makes the first one fail until ``python tools/schema_dump.py`` is run again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from tools.schema_dump import (
    COMMAND,
    PG_MAJOR,
    SCHEMA,
    SCHEMA_FILE,
    diff,
    find_pg_dump,
    normalize,
    pg_dump,
    schema_file_text,
    server_major,
)

from currant.testing.server import Databases
from workflows_postgres.migrate import apply_migrations, render

# Not the default and no word of the prose in a function body, where a schema name followed by
# a full stop would be taken for a qualifier.
OTHER_SCHEMA = "wf_template_check"


@pytest.fixture(scope="module")
def pg_dump_program(pg_server: str) -> Path:
    major = server_major(pg_server)
    if major != PG_MAJOR:
        pytest.skip(
            f"schema.sql is PostgreSQL {PG_MAJOR}'s dump and pg_dump's text changes between "
            f"major versions; the test server is PostgreSQL {major}"
        )
    program = find_pg_dump(PG_MAJOR)
    if program is None:
        pytest.skip(f"no pg_dump of PostgreSQL {PG_MAJOR} on this machine")
    return program


@pytest.fixture
def two_databases(pg_databases: Databases) -> Iterator[tuple[str, str]]:
    names = (pg_databases.create(), pg_databases.create())
    try:
        yield pg_databases.url(names[0]), pg_databases.url(names[1])
    finally:
        for name in names:
            pg_databases.drop(name)


def test_schema_sql_is_what_the_migrations_build(
    empty_database_url: str, pg_dump_program: Path
) -> None:
    apply_migrations(empty_database_url, schema=SCHEMA)
    built = schema_file_text(pg_dump(empty_database_url, SCHEMA, pg_dump_program))
    written = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
    if built != written:
        pytest.fail(
            f"{SCHEMA_FILE.name} is not what the migrations build: run `{COMMAND}` and commit "
            f"the file (- {SCHEMA_FILE.name}, + migrations):\n"
            + diff(written, built, SCHEMA_FILE.name, "migrations"),
            pytrace=False,
        )


def test_schema_sql_rendered_for_another_schema_builds_what_the_migrations_build_there(
    two_databases: tuple[str, str], pg_dump_program: Path
) -> None:
    # A schema name or channel left literal in the file (not {s}, {work}...) shows up here.
    from_migrations, from_file = two_databases
    apply_migrations(from_migrations, schema=OTHER_SCHEMA)
    with psycopg.connect(from_file, autocommit=True) as conn:
        # As pg_dump's own scripts restore: functions come before the tables they use, so their
        # bodies are checked when they run, not when created.
        conn.execute("SET check_function_bodies = false")
        conn.execute(render(SCHEMA_FILE.read_text(encoding="utf-8"), OTHER_SCHEMA).encode())
    expected = normalize(pg_dump(from_migrations, OTHER_SCHEMA, pg_dump_program), OTHER_SCHEMA)
    actual = normalize(pg_dump(from_file, OTHER_SCHEMA, pg_dump_program), OTHER_SCHEMA)
    if actual != expected:
        pytest.fail(
            f"{SCHEMA_FILE.name} rendered for schema {OTHER_SCHEMA!r} builds another schema than "
            f"the migrations do there: a name written literally instead of {{s}}, {{work}}... "
            f"(or the file is stale: run `{COMMAND}`) (- migrations, + {SCHEMA_FILE.name}):\n"
            + diff(expected, actual, "migrations", SCHEMA_FILE.name),
            pytrace=False,
        )
