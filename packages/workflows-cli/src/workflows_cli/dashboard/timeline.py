"""A workflow's steps laid out on one time axis, and the small per-queue charts: geometry only
(percentages and SVG coordinates), so that the templates hold no arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Timers, signal waits and version markers last from being scheduled to being resolved; the
# rest as the execution they started ran.
BAR_KINDS = ("activity", "child", "timer", "signal")


@dataclass
class Bar:
    seq: int
    kind: str
    name: str
    status: str
    left: float  # percent of the axis
    width: float  # percent of the axis, at least a sliver so that a short step shows
    start: str | None
    end: str | None
    duration: float | None
    attempts: int | None
    failed_attempts: int
    execution_id: str | None
    open: bool  # still running, waiting or scheduled: drawn up to now


@dataclass
class Marker:
    seq: int
    name: str
    at: float  # percent of the axis
    value: Any


@dataclass
class Timeline:
    start: str | None
    end: str | None
    seconds: float
    bars: list[Bar] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)


def _parse(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # +-infinity comes back naive (see executions.iso_utc): no place on an axis.
    return parsed if parsed.tzinfo is not None else None


def layout(history: dict[str, Any], now: datetime | None = None) -> Timeline:
    """The bars of ``history`` (as ``executions.history`` returns it) on an axis from the
    workflow's start to its end (now, while it runs)."""
    now = now or datetime.now(UTC)
    execution = history["execution"]
    steps: list[dict[str, Any]] = history["steps"]
    times = [
        t
        for step in steps
        for t in (_parse(step.get("started_at")), _parse(step.get("finished_at")))
        if t is not None
    ]
    begin = _parse(execution.get("started_at")) or _parse(execution.get("created_at"))
    if begin is None:
        begin = min(times, default=now)
    begin = min([begin, *times])
    finish = _parse(execution.get("finished_at")) or now
    finish = max([finish, *times])
    total = max((finish - begin).total_seconds(), 1e-3)

    def percent(t: datetime) -> float:
        return round(min(max((t - begin).total_seconds() / total * 100, 0.0), 100.0), 3)

    timeline = Timeline(start=begin.isoformat(), end=finish.isoformat(), seconds=round(total, 3))
    for step in steps:
        if step["kind"] == "version":
            at = _parse(step.get("started_at")) or begin
            timeline.markers.append(Marker(step["seq"], step["name"], percent(at), step["result"]))
            continue
        if step["kind"] not in BAR_KINDS:
            continue
        start = _parse(step.get("started_at")) or _parse(step.get("scheduled_at"))
        end = _parse(step.get("finished_at"))
        still_open = end is None
        left = percent(start) if start is not None else 100.0
        right = percent(end) if end is not None else percent(finish)
        attempts = step.get("attempts")
        failed = 0
        if isinstance(attempts, int) and attempts > 1:
            # Every attempt before the last one failed (or timed out) and was retried.
            failed = attempts - 1
        if step.get("status") == "failed" and isinstance(attempts, int):
            failed = max(attempts, 1)
        timeline.bars.append(
            Bar(
                seq=step["seq"],
                kind=step["kind"],
                name=step["name"],
                status=step.get("execution_status") or step.get("status") or "",
                left=left,
                width=max(round(right - left, 3), 0.4),
                start=step.get("started_at") or step.get("scheduled_at"),
                end=step.get("finished_at"),
                duration=step.get("duration"),
                attempts=attempts if isinstance(attempts, int) else None,
                failed_attempts=failed,
                execution_id=step.get("execution_id"),
                open=still_open,
            )
        )
    return timeline


def sparkline(
    completed: list[int], failed: list[int], width: int = 150, height: int = 28
) -> dict[str, Any]:
    """Bars for a queue's ends per minute (oldest first): completed up from the baseline in
    one colour, failed on top of them in another. Coordinates for an SVG of ``width`` x
    ``height``."""
    minutes = max(len(completed), 1)
    peak = max((c + f for c, f in zip(completed, failed, strict=True)), default=0) or 1
    step = width / minutes
    bars = []
    for i, (done, bad) in enumerate(zip(completed, failed, strict=True)):
        x = round(i * step + 0.5, 2)
        w = round(max(step - 1, 1), 2)
        done_h = round(done / peak * (height - 2), 2)
        bad_h = round(bad / peak * (height - 2), 2)
        bars.append(
            {
                "x": x,
                "w": w,
                "done_y": round(height - done_h, 2),
                "done_h": done_h,
                "bad_y": round(height - done_h - bad_h, 2),
                "bad_h": bad_h,
                "label": f"{minutes - i} min ago: {done} completed, {bad} failed",
            }
        )
    return {"width": width, "height": height, "bars": bars, "peak": peak}
