"""One admission point, in the database: the functions of a migrated schema, as they are now
(not as the migrations first wrote them), make an execution `running` only in ``admit``."""

from __future__ import annotations

import psycopg
import pytest

from tests.admission_scan import ADMISSION_POINTS, describe, scan_functions, unexpected

SCHEMA = "workflows"


def test_only_admit_writes_running_in_the_schema_functions(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        findings = scan_functions(conn, SCHEMA)
    outside = unexpected(findings)
    if outside:
        pytest.fail(
            f"{len(outside)} write(s) of 'running' in functions other than the admission point "
            f"({', '.join(sorted(ADMISSION_POINTS))}): call {{s}}.admit instead (lines count "
            "from the body's opening $$):\n" + describe(outside),
            pytrace=False,
        )


def test_no_status_column_defaults_to_running(database_url: str) -> None:
    # A default of 'running' would admit every INSERT that leaves the column out.
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_default FROM information_schema.columns"
            " WHERE table_schema = %s AND column_name = 'status'"
            " AND column_default ILIKE %s",
            (SCHEMA, "%running%"),
        ).fetchall()
    assert rows == []
