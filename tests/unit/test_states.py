"""The state enums and the database's CHECK constraints list the same words, so neither can
gain or lose a state without the other."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import pytest

from workflows.states import ACTIVE_STATUSES, FINAL_STATUSES, Kind, Status, StepKind, StepStatus

MIGRATIONS = (
    Path(__file__).parents[2] / "packages/workflows-postgres/src/workflows_postgres/migrations"
)
_TABLE = re.compile(r"CREATE TABLE \{s\}\.(\w+) \((.*?)\n\);", re.DOTALL)
_CHECK_IN = re.compile(r"CHECK \((\w+) IN \(([^)]*)\)\)")


def checked_values(sql: str) -> dict[tuple[str, str], list[str]]:
    """``(table, column) -> the values its CHECK (column IN (...)) allows``, in order."""
    found: dict[tuple[str, str], list[str]] = {}
    for table, body in _TABLE.findall(sql):
        for column, values in _CHECK_IN.findall(body):
            found[table, column] = re.findall(r"'([^']*)'", values)
    return found


CHECKED = checked_values((MIGRATIONS / "0001_initial.sql").read_text())


@pytest.mark.parametrize(
    ("table", "column", "enum"),
    [
        ("executions", "status", Status),
        ("executions", "kind", Kind),
        ("workflow_steps", "status", StepStatus),
        ("workflow_steps", "kind", StepKind),
    ],
)
def test_enum_lists_the_values_the_check_constraint_allows(
    table: str, column: str, enum: type[StrEnum]
) -> None:
    assert [member.value for member in enum] == CHECKED[table, column]


def test_every_checked_column_has_an_enum() -> None:
    assert set(CHECKED) == {
        ("executions", "status"),
        ("executions", "kind"),
        ("workflow_steps", "status"),
        ("workflow_steps", "kind"),
    }


def test_no_later_migration_changes_the_checked_values() -> None:
    # This test reads 0001 alone: a migration that redefines one of these constraints must be
    # read here too, or the enums would be compared with values the database no longer has.
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        if migration.name == "0001_initial.sql":
            continue
        text = migration.read_text()
        assert not _CHECK_IN.search(text), migration.name
        assert not re.search(r"DROP CONSTRAINT|ADD CONSTRAINT", text, re.IGNORECASE), migration.name


def test_final_and_active_statuses_split_every_status() -> None:
    assert set(Status) == FINAL_STATUSES | ACTIVE_STATUSES
    assert not FINAL_STATUSES & ACTIVE_STATUSES
    assert {"completed", "failed", "cancelled"} == FINAL_STATUSES


def test_members_are_the_strings_the_database_returns() -> None:
    row = {"status": "waiting", "kind": "workflow"}
    assert row["status"] == Status.WAITING and Status(row["status"]) is Status.WAITING
    assert row["kind"] in {Kind.WORKFLOW}
    assert "failed" in FINAL_STATUSES
    assert f"{Status.RUNNING}" == "running" and str(StepKind.TIMER) == "timer"
