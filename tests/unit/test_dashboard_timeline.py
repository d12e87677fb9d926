"""The dashboard's timeline geometry (pure): bars on one axis, markers apart, failed attempts
counted, open steps drawn up to now, hostile or missing times never raising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from workflows_cli.dashboard.timeline import layout, sparkline

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def step(
    seq: int, kind: str, start: float | None, end: float | None, **extra: Any
) -> dict[str, Any]:
    return {
        "seq": seq,
        "kind": kind,
        "name": f"{kind}{seq}",
        "status": extra.pop("status", "completed"),
        "execution_status": extra.pop("execution_status", None),
        "execution_id": extra.pop("execution_id", None),
        "attempts": extra.pop("attempts", None),
        "started_at": None if start is None else at(start),
        "finished_at": None if end is None else at(end),
        "scheduled_at": None if start is None else at(start),
        "duration": None,
        "result": extra.pop("result", None),
        **extra,
    }


def history(steps: list[dict[str, Any]], end: float | None = 10) -> dict[str, Any]:
    return {
        "execution": {"created_at": at(0), "started_at": at(0), "finished_at": end and at(end)},
        "steps": steps,
    }


def test_each_step_but_a_version_marker_is_a_bar_placed_on_the_workflows_span() -> None:
    t = layout(
        history(
            [
                step(0, "activity", 0, 2, execution_status="completed", attempts=3),
                step(1, "version", 2, 2, result=2),
                step(2, "timer", 2, 7),
                step(3, "signal", 7, 10),
            ]
        )
    )
    assert [b.kind for b in t.bars] == ["activity", "timer", "signal"]
    assert [(b.left, b.width) for b in t.bars] == [(0.0, 20.0), (20.0, 50.0), (70.0, 30.0)]
    assert t.bars[0].failed_attempts == 2
    assert [(m.name, m.value, m.at) for m in t.markers] == [("version1", 2, 20.0)]
    assert t.seconds == 10


def test_a_failed_step_marks_every_attempt_and_an_open_one_runs_to_now() -> None:
    now = T0 + timedelta(seconds=20)
    t = layout(
        history(
            [
                step(0, "activity", 0, 5, execution_status="failed", status="failed", attempts=2),
                step(1, "signal", 5, None, status="scheduled"),
            ],
            end=None,
        ),
        now=now,
    )
    failed, waiting = t.bars
    assert failed.failed_attempts == 2 and failed.status == "failed"
    assert waiting.open and waiting.left == 25.0 and waiting.width == 75.0


def test_a_tiny_step_keeps_a_visible_sliver() -> None:
    (bar,) = layout(history([step(0, "activity", 5, 5)])).bars
    assert bar.width > 0


times = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.just("garbage"))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["activity", "child", "timer", "signal", "version", "?"]), times, times
        ),
        max_size=8,
    )
)
def test_any_times_give_bars_within_the_axis(spec: list[tuple[str, Any, Any]]) -> None:
    steps = []
    for seq, (kind, start, end) in enumerate(spec):
        s = step(seq, kind, None, None)
        s["started_at"] = start if not isinstance(start, float) else at(start)
        s["finished_at"] = end if not isinstance(end, float) else at(end)
        steps.append(s)
    t = layout(history(steps), now=T0)
    for bar in t.bars:
        assert 0 <= bar.left <= 100 and bar.width > 0
    assert len(t.bars) == sum(
        1 for k, _, _ in spec if k in ("activity", "child", "timer", "signal")
    )


def test_sparkline_scales_to_the_busiest_minute() -> None:
    chart = sparkline([0, 4, 2], [0, 0, 2], width=30, height=22)
    heights = [(b["done_h"], b["bad_h"]) for b in chart["bars"]]
    assert heights == [(0, 0), (20.0, 0), (10.0, 10.0)]
    assert chart["bars"][2]["label"] == "1 min ago: 2 completed, 2 failed"
