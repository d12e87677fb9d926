"""Tables for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

LIST_COLUMNS = (
    "id",
    "kind",
    "name",
    "queue",
    "status",
    "priority",
    "attempts",
    "created_at",
    "schedule",
)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def scheduled_by(status: dict[str, Any]) -> str | None:
    """The schedule and tick that enqueued an execution (``name @ tick``), ``name (trigger)``
    for a manual trigger, None for an execution no schedule made."""
    name = status.get("schedule")
    if name is None:
        return None
    tick = status.get("schedule_tick")
    return f"{name} @ {tick}" if tick is not None else f"{name} (trigger)"


def schedule_row(schedule: dict[str, Any]) -> dict[str, Any]:
    """A schedule (``workflows.schedules.list``) as a row of ``workflows schedules list``."""
    return {**schedule, "state": "paused" if schedule["paused"] else "active"}


# Columns computed from a row's fields rather than read from one.
_DERIVED = {"schedule": scheduled_by}


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = LIST_COLUMNS) -> str:
    cells = [
        [_cell(_DERIVED[c](row) if c in _DERIVED else row.get(c)) for c in columns] for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def details(status: dict[str, Any]) -> str:
    keys = (
        "id",
        "kind",
        "name",
        "queue",
        "status",
        "version",
        "priority",
        "attempts",
        "max_retries",
        "timeout",
        "parent_id",
        "created_at",
        "started_at",
        "finished_at",
        "result",
    )
    lines = [f"{k + ':':<13} {_cell(status.get(k))}" for k in keys]
    schedule = scheduled_by(status)
    if schedule is not None:
        lines.append(f"{'schedule:':<13} {schedule}")
    error = status.get("error")
    if error:
        lines.append(f"{'error:':<13} {error.get('type')}: {error.get('message')}")
        trace = error.get("traceback")
        if trace:
            lines.append("traceback:")
            lines.extend("  " + line for line in trace.rstrip().splitlines())
    return "\n".join(lines)
