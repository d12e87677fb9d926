"""Durations and retention settings: what each form means, and what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workflows.config import Settings
from workflows.durations import parse_duration, to_seconds
from workflows.errors import ConfigurationError
from workflows.retention import cutoffs

DAY = 86400.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("7d", 7 * DAY),
        ("2w", 14 * DAY),
        ("1.5h", 5400.0),
        (" 7D ", 7 * DAY),
        ("0", 0.0),
        ("forever", 0.0),
        ("FOREVER", 0.0),
    ],
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "7", "7x", "d7", "-1d", "1e3s", "nan", "inf", "7d2h", "1 day"]
)
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_durations_past_a_hundred_years_are_refused() -> None:
    with pytest.raises(ValueError, match="100 years"):
        parse_duration("6000w")


def test_durations_in_code_take_text_seconds_and_timedeltas_but_not_bools() -> None:
    assert to_seconds("1h", "x") == 3600.0
    assert to_seconds(30, "x") == 30.0
    assert to_seconds(timedelta(minutes=2), "x") == 120.0
    for bad in (True, None, [1], float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError):
            to_seconds(bad, "x")


def test_retention_defaults_seven_days_and_thirty_for_failed() -> None:
    s = Settings.from_env({})
    assert s.retention_for("completed") == 7 * DAY
    assert s.retention_for("cancelled") == 7 * DAY
    assert s.retention_for("failed") == 30 * DAY


def test_unset_statuses_fall_back_to_retention_except_failed() -> None:
    s = Settings.from_env({"WORKFLOWS_RETENTION": "2d", "WORKFLOWS_RETENTION_CANCELLED": "1h"})
    assert s.retention_for("completed") == 2 * DAY
    assert s.retention_for("cancelled") == 3600.0
    assert s.retention_for("failed") == 30 * DAY
    # Empty: as if unset, so it falls back.
    s = Settings.from_env({"WORKFLOWS_RETENTION": "2d", "WORKFLOWS_RETENTION_FAILED": ""})
    assert s.retention_for("failed") == 2 * DAY


def test_zero_or_forever_keeps_a_status_forever() -> None:
    s = Settings.from_env({"WORKFLOWS_RETENTION": "forever", "WORKFLOWS_RETENTION_FAILED": "0"})
    assert [s.retention_for(x) for x in ("completed", "failed", "cancelled")] == [None] * 3
    s = Settings.from_env({"WORKFLOWS_RETENTION": "0", "WORKFLOWS_RETENTION_COMPLETED": "1d"})
    assert s.retention_for("completed") == DAY
    assert s.retention_for("cancelled") is None


@pytest.mark.parametrize(
    "variable",
    [
        "WORKFLOWS_RETENTION",
        "WORKFLOWS_RETENTION_COMPLETED",
        "WORKFLOWS_RETENTION_FAILED",
        "WORKFLOWS_RETENTION_CANCELLED",
    ],
)
def test_a_bad_retention_names_its_variable(variable: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{variable}: 'seven days' is not a duration"):
        Settings.from_env({variable: "seven days"})


def test_a_bad_retention_in_code_names_its_variable() -> None:
    with pytest.raises(ConfigurationError, match="WORKFLOWS_RETENTION_FAILED"):
        Settings(retention_failed=-5.0)
    with pytest.raises(ConfigurationError, match="WORKFLOWS_RETENTION="):
        Settings(retention=float("nan"))


def test_prune_cutoffs_follow_the_settings_or_older_than_for_the_chosen_statuses() -> None:
    s = Settings.from_env({"WORKFLOWS_RETENTION_CANCELLED": "forever"})
    assert cutoffs(s) == {"completed": 7 * DAY, "failed": 30 * DAY, "cancelled": None}
    assert cutoffs(s, "1h", ["failed"]) == {"completed": None, "failed": 3600.0, "cancelled": None}
    assert cutoffs(s, statuses="failed") == {
        "completed": None,
        "failed": 30 * DAY,
        "cancelled": None,
    }
    assert cutoffs(s, timedelta(days=1)) == {x: DAY for x in ("completed", "failed", "cancelled")}


@pytest.mark.parametrize(
    ("older_than", "statuses", "message"),
    [
        (None, ["running"], "never pruned"),
        (None, [], "nothing would be pruned"),
        ("soon", None, "older_than: 'soon' is not a duration"),
        ("forever", None, "prune nothing"),
        (-1, None, "older_than"),
        (True, None, "got bool"),
    ],
)
def test_prune_refuses_what_it_cannot_prune(
    older_than: object, statuses: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        cutoffs(Settings.from_env({}), older_than, statuses)  # type: ignore[arg-type]
