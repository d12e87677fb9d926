"""What workflows.executions accepts before anything reaches the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from workflows import executions
from workflows.errors import ConfigurationError, ExecutionNotFoundError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("30m", (None, 1800.0)),
        ("2h", (None, 7200.0)),
        (" 7d ", (None, 604800.0)),
        ("1w", (None, 604800.0)),
        ("1.5h", (None, 5400.0)),
        (timedelta(minutes=5), (None, 300.0)),
        ("2026-01-31T12:00:00+02:00", ("2026-01-31T10:00:00+00:00", None)),
        ("2026-01-31T12:00:00Z", ("2026-01-31T12:00:00+00:00", None)),
        ("2026-01-31 12:00", ("2026-01-31T12:00:00+00:00", None)),  # no offset: UTC
        (
            datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=-5))),
            ("2026-01-31T17:00:00+00:00", None),
        ),
        (None, (None, None)),
    ],
)
def test_times_are_absolute_in_utc_or_an_age_in_seconds(given: Any, expected: Any) -> None:
    assert executions.parse_time(given) == expected


@pytest.mark.parametrize(
    "bad", ["yesterday", "-2h", "2 parsecs", "", "2026-13-45", "9" * 20 + "d", 5, timedelta(-1)]
)
def test_a_bad_time_is_a_configuration_error_naming_it(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="since"):
        executions.parse_time(bad, "since")


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    row = {
        "created_at": datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC),
        "id": "0" * 8 + "-0000-7000-8000-" + "0" * 12,
    }
    cursor = executions._cursor(row)
    assert executions.decode_cursor(cursor) == ("2026-01-31T12:00:00.123456+00:00", row["id"])
    assert executions.decode_cursor(None) == (None, None)
    for bad in ("", "zzz", "x" * 500, cursor[:-3], 42):
        with pytest.raises(ConfigurationError, match="cursor"):
            executions.decode_cursor(bad)


def test_prefixes_become_the_range_of_ids_they_could_start() -> None:
    assert executions._prefix_bounds("01A2-2b") == (
        "01a22b00-0000-0000-0000-000000000000",
        "01a22bff-ffff-ffff-ffff-ffffffffffff",
    )
    full = "01a22b74-19d0-7394-98f9-10fccc57f012"
    assert executions._prefix_bounds(full.upper()) == full
    for bad in ("abc", "nope", "", "   ", "0" * 33, "01a2 2b", None):
        with pytest.raises(ExecutionNotFoundError):
            executions._prefix_bounds(bad)
