"""Flow control's values, parsed and checked where they are given (no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows.flow import Rate, check_key, parse_rate, resolve_key
from workflows.history import ScheduleActivity, StepOptions
from workflows.records import plan


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/m", Rate(100, 60.0)),
        ("5/s", Rate(5, 1.0)),
        (" 7 / h ", Rate(7, 3600.0)),
        ("2/day", Rate(2, 86400.0)),
        ("10/30s", Rate(10, 30.0)),
        ("3/1.5minutes", Rate(3, 90.0)),
        ("500/S", Rate(500, 1.0)),
    ],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text", ["", "100", "/m", "100/", "100/fortnight", "-1/s", "0/s", "1/0s", "1/8d", 100, None]
)
def test_bad_rates_are_refused(text: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_rate(text)


@given(st.integers(1, 1_000_000), st.sampled_from(["s", "m", "h", "d", "30s", "5m"]))
def test_a_rate_reads_back_as_itself(starts: int, unit: str) -> None:
    rate = parse_rate(f"{starts}/{unit}")
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize("key", ["", " padded", "nul\x00", "x" * 501, "\udc80"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ConfigurationError):
        check_key("concurrency_key", key)


def test_a_key_function_is_called_with_the_call_arguments() -> None:
    assert resolve_key("k", lambda a, b=0: f"{a}:{b}", (1,), {"b": 2}) == "1:2"
    assert resolve_key("k", lambda *a: None, (), {}) is None
    with pytest.raises(ConfigurationError, match="as computed"):
        resolve_key("k", lambda: 5, (), {})


def test_an_activity_under_a_key_never_runs_ahead_of_its_admission() -> None:
    # Eager activities start before their write: one a key may hold back must not.
    def activity(seq: int, **options: object) -> ScheduleActivity:
        return ScheduleActivity(seq, "m.f", (), {}, StepOptions(queue="q", **options))  # type: ignore[arg-type]

    commands = [
        activity(1),
        activity(2, concurrency_key="c", concurrency_limit=1),
        activity(3, rate_key="r"),
    ]
    rows = plan(Settings(), "q", 1, commands, frozenset({"q"}), 10).children
    assert [r.eager for r in rows] == [True, False, False]
    assert (rows[1].concurrency_key, rows[1].concurrency_limit) == ("c", 1)
    assert rows[2].rate_key == "r"
    # A queue the worker knows to be limited is left out of eager_queues: nothing runs ahead.
    assert not any(r.eager for r in plan(Settings(), "q", 1, commands, frozenset(), 10).children)
