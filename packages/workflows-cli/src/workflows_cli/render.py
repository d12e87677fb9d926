"""Tables for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

LIST_COLUMNS = ("id", "kind", "name", "queue", "status", "priority", "attempts", "created_at")


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = LIST_COLUMNS) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
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
    error = status.get("error")
    if error:
        lines.append(f"{'error:':<13} {error.get('type')}: {error.get('message')}")
        trace = error.get("traceback")
        if trace:
            lines.append("traceback:")
            lines.extend("  " + line for line in trace.rstrip().splitlines())
    return "\n".join(lines)
