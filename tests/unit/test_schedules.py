"""Cron schedules without a database: validation at declaration, ticks (DST included), and the
misfire policy as a pure function."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workflows import ConfigurationError, job, workflow
from workflows.api import REGISTRY
from workflows.schedules import MAX_CATCHUP, Schedule, due_ticks, tick_after


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def ticks(cron: str, timezone: str, start: datetime, n: int) -> list[datetime]:
    found: list[datetime] = []
    t: datetime | None = start
    for _ in range(n):
        t = tick_after(cron, timezone, t)  # type: ignore[arg-type]
        assert t is not None
        found.append(t)
    return found


async def report() -> None: ...


async def nightly() -> None: ...


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    # Declared here, never left behind for an in-process worker of another test to register.
    before = set(REGISTRY)
    yield
    for path in set(REGISTRY) - before:
        del REGISTRY[path]


# ---- validation at declaration -------------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "61 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 0 31 2 *",
        "@every_minute",
        "¹ * * * *",
        "* " * 150,
    ],
)
def test_an_invalid_cron_expression_is_refused_at_declaration(cron: str) -> None:
    with pytest.raises(ConfigurationError, match="cron expression"):
        job(queue="q", schedule=cron)(report)
    assert not any(p.endswith(":report") for p in REGISTRY)


def test_a_cron_expression_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cron expression must be a string"):
        Schedule(5).validated()  # type: ignore[arg-type]


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime"])
def test_an_unknown_timezone_is_refused_at_declaration(zone: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown timezone"):
        job(queue="q", schedule="0 * * * *", timezone=zone)(report)
    with pytest.raises(ConfigurationError, match="unknown timezone"):
        workflow(queue="q", schedule=Schedule("0 * * * *", timezone=zone))(report)


@pytest.mark.parametrize("zone", ["", None, 1])
def test_a_timezone_that_is_no_name_is_refused(zone: Any) -> None:
    with pytest.raises(ConfigurationError, match="timezone"):
        workflow(queue="q", schedule=Schedule("0 * * * *", timezone=zone))(report)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((object(),), None),
        ((math.nan,), None),
        ((), {"when": datetime.now(UTC)}),
        ((), {1: "not a string key"}),
    ],
)
def test_schedule_arguments_json_cannot_hold_are_refused_at_declaration(
    args: Any, kwargs: Any
) -> None:
    with pytest.raises(ConfigurationError, match="schedule"):
        job(queue="q", schedule="0 * * * *", schedule_args=args, schedule_kwargs=kwargs)(report)


def test_schedule_arguments_must_be_a_sequence_and_a_mapping() -> None:
    with pytest.raises(ConfigurationError, match="schedule args"):
        Schedule("0 * * * *", args="not a tuple").validated()  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="schedule kwargs"):
        Schedule("0 * * * *", kwargs=[("a", 1)]).validated()  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "has space", "x" * 256, "-leading-dash", 42])
def test_a_bad_schedule_name_is_refused(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="schedule name"):
        job(queue="q", schedule=Schedule("0 * * * *", name=name))(report)


def test_catchup_must_be_a_boolean() -> None:
    with pytest.raises(ConfigurationError, match="catchup"):
        Schedule("0 * * * *", catchup="yes").validated()  # type: ignore[arg-type]


def test_a_declared_schedule_is_normalised_and_kept_on_the_function() -> None:
    fn = job(
        queue="q",
        schedule="  */5   * * * * ",
        timezone="Europe/Berlin",
        schedule_args=["a"],
        schedule_kwargs={"n": 1},
        catchup=True,
    )(report)
    assert fn.schedule == Schedule(
        "*/5 * * * *", ("a",), {"n": 1}, "Europe/Berlin", catchup=True, name=None
    )
    named = workflow(queue="q", schedule=Schedule("@daily", name="nightly-report"))(nightly)
    assert named.schedule is not None and named.schedule.name == "nightly-report"
    assert job(queue="q")(report).schedule is None


# ---- ticks -----------------------------------------------------------------------------------


def test_a_seconds_field_ticks_within_the_minute() -> None:
    assert ticks("*/2 * * * * *", "UTC", at(2026, 1, 1, 0, 0, 0), 3) == [
        at(2026, 1, 1, 0, 0, 2),
        at(2026, 1, 1, 0, 0, 4),
        at(2026, 1, 1, 0, 0, 6),
    ]


def test_the_next_tick_is_strictly_after_the_instant_given() -> None:
    assert tick_after("0 * * * *", "UTC", at(2026, 1, 1, 5, 0, 0)) == at(2026, 1, 1, 6)
    start = at(2026, 1, 1, 4, 59, 59) + timedelta(microseconds=999_999)
    assert tick_after("0 * * * *", "UTC", start) == at(2026, 1, 1, 5)


def test_a_daily_time_is_read_in_the_schedules_timezone() -> None:
    # 09:00 in Berlin is 08:00 UTC in winter, 07:00 in summer.
    assert tick_after("0 9 * * *", "Europe/Berlin", at(2026, 1, 10)) == at(2026, 1, 10, 8)
    assert tick_after("0 9 * * *", "Europe/Berlin", at(2026, 7, 10)) == at(2026, 7, 10, 7)
    assert tick_after("@daily", "America/New_York", at(2026, 1, 10, 12)) == at(2026, 1, 11, 5)


def test_a_daily_time_skipped_by_spring_forward_runs_once_right_after_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    assert ticks("30 2 * * *", "Europe/Berlin", at(2026, 3, 27, 12), 3) == [
        at(2026, 3, 28, 1, 30),  # 02:30 CET
        at(2026, 3, 29, 1, 0),  # 03:00 CEST, the first instant after the gap
        at(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_a_daily_time_repeated_by_fall_back_runs_once() -> None:
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
    assert ticks("30 1 * * *", "America/New_York", at(2026, 10, 31, 12), 3) == [
        at(2026, 11, 1, 5, 30),  # 01:30 EDT
        at(2026, 11, 2, 6, 30),  # 01:30 EST, the next day: not 06:30 on 11-01
        at(2026, 11, 3, 6, 30),
    ]
    # From inside the repeated hour, after the first 01:30: tomorrow's, not the one passed.
    assert tick_after("30 1 * * *", "America/New_York", at(2026, 11, 1, 6, 15)) == at(
        2026, 11, 2, 6, 30
    )


def test_an_hourly_schedule_runs_every_real_hour_across_both_transitions() -> None:
    spring = ticks("0 * * * *", "Europe/Berlin", at(2026, 3, 28, 23, 30), 4)
    assert [b - a for a, b in itertools.pairwise(spring)] == [timedelta(hours=1)] * 3
    fall = ticks("0 * * * *", "America/New_York", at(2026, 11, 1, 3, 30), 4)
    assert fall == [at(2026, 11, 1, 4), at(2026, 11, 1, 5), at(2026, 11, 1, 6), at(2026, 11, 1, 7)]


# ---- the misfire policy ----------------------------------------------------------------------


def test_nothing_is_due_before_the_first_unfired_tick() -> None:
    assert due_ticks(
        "* * * * * *", "UTC", at(2026, 1, 1, 0, 0, 5), at(2026, 1, 1, 0, 0, 4), True
    ) == (
        [],
        at(2026, 1, 1, 0, 0, 5),
    )


def test_a_tick_due_on_time_fires_alone_and_the_next_comes_after_now() -> None:
    now = at(2026, 1, 1, 0, 0, 5) + timedelta(milliseconds=3)
    assert due_ticks("* * * * * *", "UTC", at(2026, 1, 1, 0, 0, 5), now, False) == (
        [at(2026, 1, 1, 0, 0, 5)],
        at(2026, 1, 1, 0, 0, 6),
    )


def test_after_an_outage_only_the_latest_missed_tick_fires_by_default() -> None:
    fired, after = due_ticks(
        "*/2 * * * * *", "UTC", at(2026, 1, 1, 0, 0, 0), at(2026, 1, 1, 0, 0, 9, 500), False
    )
    assert fired == [at(2026, 1, 1, 0, 0, 8)]
    assert after == at(2026, 1, 1, 0, 0, 10)


def test_after_an_outage_catchup_fires_every_missed_tick_oldest_first() -> None:
    fired, after = due_ticks(
        "*/2 * * * * *", "UTC", at(2026, 1, 1, 0, 0, 0), at(2026, 1, 1, 0, 0, 9), True
    )
    assert fired == [at(2026, 1, 1, 0, 0, s) for s in (0, 2, 4, 6, 8)]
    assert after == at(2026, 1, 1, 0, 0, 10)


def test_a_long_outage_fires_one_tick_or_the_latest_max_catchup() -> None:
    first, now = at(2026, 1, 1), at(2026, 1, 3, 0, 0, 0, 250_000)
    fired, after = due_ticks("* * * * * *", "UTC", first, now, False)
    assert fired == [at(2026, 1, 3)] and after == at(2026, 1, 3, 0, 0, 1)
    fired, after = due_ticks("* * * * * *", "UTC", first, now, True)
    assert len(fired) == MAX_CATCHUP
    assert fired[-1] == at(2026, 1, 3) and fired[0] == at(2026, 1, 3) - timedelta(seconds=999)
    assert after == at(2026, 1, 3, 0, 0, 1)


def test_catching_up_across_a_dst_change_fires_the_ticks_the_forward_walk_gives() -> None:
    # Long enough that the latest ticks are found walking back from now (past the forward
    # walk's reach), across Berlin's spring-forward: they must be the ticks going forward
    # would fire, no more, no fewer.
    cron, zone = "*/30 * * * *", "Europe/Berlin"
    first, now = at(2026, 2, 1), at(2026, 4, 15, 0, 10)
    fired, after = due_ticks(cron, zone, first, now, True)
    expected: list[datetime] = []
    t: datetime | None = first - timedelta(seconds=1)
    while True:
        t = tick_after(cron, zone, t)  # type: ignore[arg-type]
        assert t is not None
        if t > now:
            break
        expected.append(t)
    assert len(expected) > MAX_CATCHUP + 1000
    assert fired == expected[-MAX_CATCHUP:]
    assert after == at(2026, 4, 15, 0, 30)
    # The daily 02:30 across the gap, caught up: the 03:00 CEST run is among them once.
    fired, _ = due_ticks("30 2 * * *", zone, at(2026, 3, 28, 1, 30), at(2026, 3, 30, 12), True)
    assert fired == [at(2026, 3, 28, 1, 30), at(2026, 3, 29, 1, 0), at(2026, 3, 30, 0, 30)]
