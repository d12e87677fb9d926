"""Tables for people, JSON for programs."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from workflows.codec import wrapped_scheme

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


# Tables fit the terminal, but never narrower than 80 columns (a pipe or a log still reads)
# nor wider than 120 (a wide terminal gains nothing from one long line); --json keeps all.
MIN_WIDTH = 80
MAX_WIDTH = 120
ELLIPSIS = "\u2026"
# What a column may be cut down to (at least its header's width, up to this).
_FLOOR = 8
_ISO_TIME = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(\+00:00|Z)")


def terminal_width() -> int:
    """The width tables are fitted to: the terminal's, kept within 80 to 120 columns."""
    return max(MIN_WIDTH, min(MAX_WIDTH, shutil.get_terminal_size().columns))


def output_width() -> int | None:
    """What to fit a table to: the terminal's width when standard output is a terminal; None
    when it is a pipe or a file, where values stay whole for grep and scripts."""
    try:
        return terminal_width() if sys.stdout.isatty() else None
    except (AttributeError, ValueError):
        return None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        scheme = wrapped_scheme(value)
        if scheme is not None:
            # A payload this process's codec cannot unwrap (no key): said, not dumped.
            return f"<encrypted: {scheme}>"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        # A UTC timestamp to the second; a multi-line value (a traceback) on one line.
        short = _ISO_TIME.fullmatch(value)
        if short:
            return f"{short[1]} {short[2]}"
        if "\n" in value or "\r" in value:
            return " ".join(value.split())
    return str(value)


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one an ellipsis when anything was cut."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS if width > 0 else ""


def truncate_start(text: str, width: int) -> str:
    """``text`` cut to ``width`` from its start, keeping its indentation and its end (a
    function's ``module:name`` path is told apart by its last part)."""
    if len(text) <= width:
        return text
    body = text.lstrip(" ")
    indent = min(len(text) - len(body), max(width - 2, 0))
    keep = width - indent - 1
    return " " * indent + ELLIPSIS + (body[-keep:] if keep > 0 else "") if width > 0 else ""


def fit(natural: Sequence[int], floors: Sequence[int], width: int, gap: int = 2) -> list[int]:
    """Column widths that fit ``width`` (with ``gap`` between columns): the widest column that
    can still give gives a character, until the line fits or none can give (then as narrow as
    each may be)."""
    widths = list(natural)
    room = width - gap * (len(widths) - 1)
    excess = sum(widths) - room
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            break
        widest = max(widths[i] for i in shrinkable)
        tied = [i for i in shrinkable if widths[i] == widest]
        runner_up = max([widths[i] for i in shrinkable if widths[i] < widest], default=0)
        floor = max(floors[i] for i in tied)
        # Every tied column steps down together, to the next width that matters.
        step = min(widest - max(runner_up, floor), -(-excess // len(tied)))
        step = max(step, 1)
        for i in tied:
            give = min(step, widths[i] - floors[i], excess)
            widths[i] -= give
            excess -= give
            if excess <= 0:
                break
    return widths


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


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] = LIST_COLUMNS,
    *,
    width: int | None = None,
    headers: Mapping[str, str] | None = None,
    floors: Mapping[str, int] | None = None,
    optional: Sequence[str] = (),
    cut_start: Sequence[str] = ("name", "function"),
) -> str:
    """Rows as aligned columns; with ``width``, long values cut (ending in an ellipsis) so that
    every line fits it. ``headers``: a column's title when not its name in capitals;
    ``floors``: how narrow a column may be cut (default: its title's width, at most 8);
    ``optional``: columns left out, first ones first, while the rest could not fit even cut
    to their floors; ``cut_start``: columns whose long values lose their start, not end."""
    if width is not None:
        columns = _droppable(rows, columns, width, headers or {}, floors or {}, optional)
    titles = [(headers or {}).get(c, c.upper()) for c in columns]
    cells = [
        [_cell(_DERIVED[c](row) if c in _DERIVED else row.get(c)) for c in columns] for row in rows
    ]
    widths = [max([len(t)] + [len(r[i]) for r in cells]) for i, t in enumerate(titles)]
    if width is not None:
        lows = [_floor(c, widths[i], titles[i], floors or {}) for i, c in enumerate(columns)]
        widths = fit(widths, lows, width)
    lines = [
        "  ".join(truncate(t, w).ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip()
    ]
    cutters = [truncate_start if c in cut_start else truncate for c in columns]
    for r in cells:
        lines.append(
            "  ".join(
                cut(v, w).ljust(w) for cut, v, w in zip(cutters, r, widths, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)


def _floor(column: str, natural: int, title: str, floors: Mapping[str, int]) -> int:
    return min(natural, floors.get(column, min(len(title), _FLOOR)))


def _droppable(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    width: int,
    headers: Mapping[str, str],
    floors: Mapping[str, int],
    optional: Sequence[str],
) -> list[str]:
    kept = list(columns)
    for candidate in optional:
        need = -2
        for c in kept:
            title = headers.get(c, c.upper())
            cells = [_cell(_DERIVED[c](row) if c in _DERIVED else row.get(c)) for row in rows]
            natural = max([len(title)] + [len(v) for v in cells])
            need += _floor(c, natural, title, floors) + 2
        if need <= width:
            break
        if candidate in kept:
            kept.remove(candidate)
    return kept


# The list's columns at any width: ids whole (they are what one copies), statuses and times
# whole; what an 80-column terminal cannot hold besides is left out, schedule first.
_LIST_HEADERS = {"priority": "PRI", "attempts": "TRIES"}
_LIST_FLOORS = {"id": 36, "kind": 8, "status": 9, "created_at": 19}
_LIST_OPTIONAL = ("schedule", "priority", "attempts", "created_at")


def executions_table(rows: Sequence[dict[str, Any]], width: int | None) -> str:
    """Executions (``workflows list``) as a table fitted to ``width`` (None: values whole)."""
    return table(
        rows,
        LIST_COLUMNS,
        width=width,
        headers=_LIST_HEADERS,
        floors=_LIST_FLOORS,
        optional=_LIST_OPTIONAL,
    )


def duration(value: float | None) -> str | None:
    """A duration or an age as a person reads it: 0.25s, 42s, 3m05s, 2h03m, 4d02h."""
    if value is None:
        return None
    if value < 10:
        return f"{value:.2f}s"
    whole = int(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


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
