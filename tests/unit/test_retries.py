"""The bulk retry's time bounds (workflows.retries.parse_time): no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from workflows.errors import ConfigurationError
from workflows.retries import parse_time

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", timedelta(seconds=30)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        (" 7d ", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_a_duration_is_that_long_ago(text: str, ago: timedelta) -> None:
    assert parse_time(text, now=NOW) == NOW - ago


def test_iso_times_are_utc_unless_they_say() -> None:
    assert parse_time("2026-11-30T10:00:00") == datetime(2026, 11, 30, 10, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    assert parse_time("2026-11-30T10:00:00+02:00") == datetime(2026, 11, 30, 10, tzinfo=plus_two)
    assert parse_time(NOW) is NOW


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "must be an ISO-8601 time or a duration ago"),
        ("2 hours", "must be an ISO-8601 time or a duration ago"),
        ("-2h", "must be an ISO-8601 time or a duration ago"),
        ("", "must be an ISO-8601 time or a duration ago"),
        (3600, "must be an ISO-8601 time or a duration ago"),
        (None, "must be an ISO-8601 time or a duration ago"),
        ("99999999999w", "too far back"),
        (datetime(2026, 1, 1), "timezone-aware"),
    ],
)
def test_anything_else_is_a_clear_error(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_time(value, what="since")
