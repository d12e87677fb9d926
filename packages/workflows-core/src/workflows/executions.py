"""Executions looked up and listed, and a workflow's history: what ``workflows list``,
``workflows history`` and every command that takes an id use, for dashboards and tools too.

    page = await workflows.executions.list(queue="emails", status="failed", since="2h")
    while page["next"]:
        page = await workflows.executions.list(queue="emails", status="failed", since="2h",
                                               after=page["next"])
    tree = await workflows.executions.history(await workflows.executions.resolve("0193ab"))

Each call has a ``_sync`` twin. Bad input raises ``ConfigurationError`` before anything reaches
the database; an unknown id ``ExecutionNotFoundError``; an id prefix that several executions
share :class:`~workflows.errors.AmbiguousIdError`.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows import codec
from workflows.config import Settings
from workflows.durations import age_seconds
from workflows.errors import AmbiguousIdError, ConfigurationError, ExecutionNotFoundError
from workflows.states import Kind, Status
from workflows.store import async_store, sync_store

__all__ = [
    "MAX_LIMIT",
    "MIN_PREFIX",
    "by_key",
    "by_key_sync",
    "check_text",
    "decode_cursor",
    "history",
    "history_sync",
    "list",
    "list_sync",
    "parse_time",
    "resolve",
    "resolve_sync",
]

MAX_LIMIT = 10_000
#: The most executions one filtered page reads (newest first from its cursor): past them, the
#: page ends with what it found, perhaps nothing, and ``next`` goes on below.
SCAN_LIMIT = 100_000
# A cursor past every id of its created_at: the next page starts strictly older.
_LAST_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"
# Fewer hex digits than this would match whole swathes of the table by design.
MIN_PREFIX = 4
_HEX = re.compile(r"[0-9a-f]+")


# ---- ids ---------------------------------------------------------------------------------------


def _prefix_bounds(text: Any) -> tuple[str, str] | str:
    """A full id as itself, canonical; a prefix as the lowest and highest ids it could start."""
    if not isinstance(text, str) or not text.strip():
        raise ExecutionNotFoundError(f"no execution {text!r} (give an id or a prefix of one)")
    raw = text.strip()
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        pass
    digits = raw.lower().replace("-", "")
    if len(digits) > 32 or not _HEX.fullmatch(digits) or len(digits) < MIN_PREFIX:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ExecutionNotFoundError(
            f"no execution {shown!r} (ids are UUIDs, or prefixes of at least {MIN_PREFIX} hex "
            "digits)"
        )
    return _uuid_text(digits.ljust(32, "0")), _uuid_text(digits.ljust(32, "f"))


def _uuid_text(hex32: str) -> str:
    return str(uuid.UUID(hex=hex32))


def _resolved(text: str, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        raise ExecutionNotFoundError(f"no execution starts with {text.strip()!r}")
    if len(rows) > 1:
        raise AmbiguousIdError(text.strip(), [r["id"] for r in rows])
    return str(rows[0]["id"])


async def resolve(text: str) -> str:
    """The full id of the execution ``text`` names: a full id (returned as it is, whether or
    not an execution has it), or a unique prefix (hex, case-insensitive, hyphens anywhere,
    at least :data:`MIN_PREFIX` digits). ``ExecutionNotFoundError`` when none matches,
    ``AmbiguousIdError`` when several do."""
    bounds = _prefix_bounds(text)
    if isinstance(bounds, str):
        return bounds
    return _resolved(text, await async_store(Settings.current()).control("fleet_resolve", bounds))


def resolve_sync(text: str) -> str:
    bounds = _prefix_bounds(text)
    if isinstance(bounds, str):
        return bounds
    return _resolved(text, sync_store(Settings.current()).control("fleet_resolve", bounds))


# ---- listing -----------------------------------------------------------------------------------


def parse_time(value: Any, name: str = "time") -> tuple[str | None, float | None]:
    """A bound given as an aware datetime, ISO-8601 text (no offset: UTC) or a relative age
    (``"30m"``, ``"2h"``, ``"7d"``, ``"1w"``, ``"90s"``, or a ``timedelta``): as (ISO-8601 text
    in UTC, None) or (None, seconds ago), for the database's clock to place."""
    if value is None:
        return None, None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(), None
    elif isinstance(value, str):
        age = age_seconds(value)
        if age is not None:
            seconds = age
        else:
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ConfigurationError(
                    f"{name} must be ISO-8601 (2026-01-31T12:00:00+00:00) or an age such as "
                    f"30m, 2h, 7d, got {value[:60]!r}"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC).isoformat(), None
    else:
        raise ConfigurationError(
            f"{name} must be a datetime, a timedelta or text, got {type(value).__name__}"
        )
    if not 0 <= seconds <= 100 * 365 * 86400:
        raise ConfigurationError(f"{name} must be an age of 0 to 100 years, got {value!r}")
    return None, seconds


def _cursor(row: Mapping[str, Any]) -> str:
    text = f"{row['created_at'].astimezone(UTC).isoformat()}|{row['id']}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: Any, name: str = "cursor") -> tuple[str, str] | tuple[None, None]:
    """A page's cursor as (created_at, id) text; (None, None) for no cursor."""
    if cursor is None:
        return None, None
    problem = ConfigurationError(
        f"invalid {name} {str(cursor)[:60]!r}: pass the one a previous page returned"
    )
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 200:
        raise problem
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = text.partition("|")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError(at)
        return moment.isoformat(), str(uuid.UUID(ident))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise problem from None


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str | None:
    if value is None:
        return None
    text = value.value if isinstance(value, Kind | Status) else value
    if text not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return str(text)


def check_text(value: Any, name: str) -> str | None:
    """A queue's or function's name to filter on (None: no filter)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 1000 or "\x00" in value:
        raise ConfigurationError(f"{name} must be non-empty text of at most 1000 characters")
    return value


def _list_args(
    queue: Any,
    status: Any,
    kind: Any,
    name: Any,
    since: Any,
    until: Any,
    after: Any,
    limit: Any,
) -> tuple[Any, ...]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    since_at, since_ago = parse_time(since, "since")
    until_at, until_ago = parse_time(until, "until")
    after_at, after_id = decode_cursor(after, "after")
    return (
        check_text(queue, "queue"),
        _choice("status", status, [s.value for s in Status]),
        _choice("kind", kind, [k.value for k in Kind]),
        check_text(name, "name"),
        since_at,
        until_at,
        after_at,
        after_id,
        # One more than asked: a next cursor only when there is a next row.
        limit + 1,
        since_ago,
        until_ago,
    )


# What inspection shows of a stored payload this process cannot parse (written by another
# role: nested past what Python's JSON decoder takes); get_result() raises instead.
UNREADABLE_KEY = "$workflows_unreadable"


def _view(text: str | None) -> Any:
    """A stored payload as inspection shows it: JSON, unwrapped if this process's codec can
    (else the envelope; see JsonCodec.view). Errors are never wrapped."""
    try:
        data = codec.decode(text)
    except (RecursionError, ValueError) as exc:
        return {UNREADABLE_KEY: f"{type(exc).__name__}: {codec.safe_str(exc, limit=200)}"}
    return codec.current().view(data)


def unreadable(value: Any) -> str | None:
    """Why a viewed payload could not be read, if it could not (see UNREADABLE_KEY)."""
    if type(value) is dict and UNREADABLE_KEY in value and len(value) == 1:
        return str(value[UNREADABLE_KEY])
    return None


def execution_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """An execution's row (the columns of the store's ``status`` and ``list`` statements) as
    ``get_status``, ``executions.list`` and the CLI's ``--json`` show it."""
    return {
        "id": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "queue": row["queue"],
        "status": row["status"],
        "priority": row["priority"],
        "attempts": row["attempts"],
        "max_retries": row["max_retries"],
        "timeout": row["timeout_seconds"],
        "version": row["version"],
        "parent_id": row["parent_id"],
        "idempotency_key": row["idempotency_key"],
        "args": _view(row["args"]),
        "result": _view(row["result"]),
        "error": codec.decode(row["error"]),
        "cancel_requested": row["cancel_requested"],
        # The worker that runs it now (None unless running).
        "worker_id": row.get("worker_id"),
        "created_at": iso_utc(row["created_at"]),
        "run_at": iso_utc(row["run_at"]),
        "started_at": iso_utc(row["started_at"]),
        "finished_at": iso_utc(row["finished_at"]),
        # The schedule and tick that produced it (see 0008); its flow-control keys, and why a
        # pending one has not started (status only; see waiting_for() in 0007).
        "schedule": row.get("schedule_name"),
        "schedule_tick": iso_utc(row.get("schedule_tick")),
        "concurrency_key": row.get("concurrency_key"),
        "rate_key": row.get("rate_key"),
        "waiting_for": row.get("waiting_for"),
    }


def _page(
    rows: builtins.list[dict[str, Any]], limit: int, floor: datetime | None
) -> dict[str, Any]:
    more = len(rows) > limit
    rows = rows[:limit]
    if more:
        cursor: str | None = _cursor(rows[-1])
    elif floor is not None:
        # The walk stopped at the floor, every execution of that created_at read: below it.
        cursor = _cursor({"created_at": floor, "id": _LAST_ID})
    else:
        cursor = None
    return {"executions": [execution_dict(r) for r in rows], "next": cursor}


def _walks(args: tuple[Any, ...]) -> builtins.list[tuple[Any, ...] | None]:
    """The walks to try in turn, each as the scan floor's parameters (None: no floor, for an
    unfiltered page, which every execution matches). A filtered page first reads a short
    stretch, enough when matches are common, and only then up to SCAN_LIMIT."""
    if not any(args[:4]):
        return [None]
    # since, until, cursor (created_at, id), since's age, until's age; then how far.
    bounds = (args[4], args[5], args[6], args[7], args[9], args[10])
    short = min(max(50 * args[8], 2_000), SCAN_LIMIT)
    return [(*bounds, n) for n in sorted({short, SCAN_LIMIT})]


def _floor(rows: builtins.list[dict[str, Any]]) -> datetime | None:
    return rows[0]["created_at"] if rows else None


async def list(
    *,
    queue: str | None = None,
    status: str | Status | None = None,
    kind: str | Kind | None = None,
    name: str | None = None,
    since: str | datetime | timedelta | None = None,
    until: str | datetime | timedelta | None = None,
    after: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """One page of executions, newest first (by ``created_at``, then id):
    ``{"executions": [...], "next": cursor or None}``; pass ``next`` as ``after`` for the
    following page (keyset paging: no row is skipped or repeated as rows are added).

    ``since`` (inclusive) and ``until`` (exclusive) bound ``created_at``: a datetime, ISO-8601
    text (without an offset: UTC) or an age (``"30m"``, ``"2h"``, ``"7d"``, a timedelta).
    ``name`` is a function's import path as stored (``app:send_email``). Each execution is a
    dict as ``get_status`` returns it.

    A filtered page reads at most :data:`SCAN_LIMIT` executions from its cursor down: when
    matches are rarer than that, it holds fewer than ``limit`` (perhaps none) and ``next``
    goes on below, so that no call reads the whole table."""
    args = _list_args(queue, status, kind, name, since, until, after, limit)
    store = async_store(Settings.current())
    for walk in _walks(args):
        floor = _floor(await store.control("fleet_scan_floor", walk)) if walk else None
        rows = await store.control("fleet_list", (*args, iso_utc(floor)))
        if len(rows) > limit or floor is None:
            break
    return _page(rows, limit, floor)


def list_sync(
    *,
    queue: str | None = None,
    status: str | Status | None = None,
    kind: str | Kind | None = None,
    name: str | None = None,
    since: str | datetime | timedelta | None = None,
    until: str | datetime | timedelta | None = None,
    after: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    args = _list_args(queue, status, kind, name, since, until, after, limit)
    store = sync_store(Settings.current())
    for walk in _walks(args):
        floor = _floor(store.control("fleet_scan_floor", walk)) if walk else None
        rows = store.control("fleet_list", (*args, iso_utc(floor)))
        if len(rows) > limit or floor is None:
            break
    return _page(rows, limit, floor)


# ---- history -----------------------------------------------------------------------------------


def iso_utc(value: datetime | None) -> str | None:
    """ISO-8601 in UTC. A timestamp of +-infinity (written by hand, or by an old producer)
    comes from the driver as a naive datetime.max or .min, which has no UTC to convert to."""
    if value is None:
        return None
    return value.isoformat() if value.tzinfo is None else value.astimezone(UTC).isoformat()


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None or start.tzinfo is None or end.tzinfo is None:
        return None  # unknown, or +-infinity (see _iso): no duration to tell
    return round((end - start).total_seconds(), 6)


def _step(row: dict[str, Any]) -> dict[str, Any]:
    has_run = row["execution_status"] is not None
    # A step with an execution ran as that row says (its first attempt's start, its end); a
    # timer, signal or version marker lasted from being scheduled to being resolved.
    started = row["started_at"] if has_run else row["scheduled_at"]
    finished = row["finished_at"] if has_run else row["resolved_at"]
    step = {
        "seq": row["seq"],
        "kind": row["kind"],
        "name": row["name"],
        "status": row["status"],
        "execution_id": row["execution_id"],
        "execution_status": row["execution_status"],
        "queue": row["queue"],
        "attempts": row["attempts"],
        "max_retries": row["max_retries"],
        "scheduled_at": iso_utc(row["scheduled_at"]),
        "started_at": iso_utc(started),
        "finished_at": iso_utc(finished),
        "resolved_at": iso_utc(row["resolved_at"]),
        "duration": _seconds(started, finished),
        "fire_at": iso_utc(row["fire_at"]),
        "result": _view(row["result"]),
        "error": codec.decode(row["error"]),
    }
    if row["kind"] == "child":
        step["children"] = []
    return step


def _tree(root: dict[str, Any], rows: builtins.list[dict[str, Any]]) -> dict[str, Any]:
    by_workflow: dict[str, builtins.list[dict[str, Any]]] = {}
    for row in rows:
        by_workflow.setdefault(row["workflow_id"], []).append(_step(row))
    for steps in by_workflow.values():
        for step in steps:
            if step["kind"] == "child" and step["execution_id"] is not None:
                step["children"] = by_workflow.get(step["execution_id"], [])
    started = root["started_at"]
    finished = root["finished_at"]
    execution = dict(root)
    execution["duration"] = (
        _seconds(datetime.fromisoformat(started), datetime.fromisoformat(finished))
        if started and finished
        else None
    )
    return {"execution": execution, "steps": by_workflow.get(root["id"], [])}


def _signal(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "payload": _view(row["payload"]),
        "received_at": iso_utc(row["received_at"]),
        # The step of the workflow that took it; None while nothing has waited for it.
        "consumed_seq": row["consumed_seq"],
    }


async def history(execution_id: str) -> dict[str, Any]:
    """A workflow's history: ``{"execution": <as get_status>, "steps": [...]}``, each step with
    ``seq``, ``kind``, ``name``, ``status``, its execution's ``execution_id``,
    ``execution_status``, ``attempts`` and ``max_retries`` (activities and child workflows),
    ``scheduled_at``, ``started_at``, ``finished_at`` (ISO-8601, UTC) and ``duration``
    (seconds), ``result`` and ``error``; a child workflow's step has its steps in ``children``,
    recursively; ``signals``, those the workflow received (``name``, ``payload``,
    ``received_at``, and ``consumed_seq``, the step that took it, None while none has). A job's
    history is its execution with no steps and no signals. ``execution_id`` may be a unique
    prefix."""
    full = await resolve(execution_id)
    store = async_store(Settings.current())
    root = await store.get_status(full)
    if root["kind"] != "workflow":
        return {**_tree(root, []), "signals": []}
    rows = await store.control("fleet_history", (full,))
    signals = await store.control("fleet_signals", (full,))
    return {**_tree(root, rows), "signals": [_signal(r) for r in signals]}


def history_sync(execution_id: str) -> dict[str, Any]:
    full = resolve_sync(execution_id)
    store = sync_store(Settings.current())
    root = store.get_status(full)
    if root["kind"] != "workflow":
        return {**_tree(root, []), "signals": []}
    rows = store.control("fleet_history", (full,))
    signals = store.control("fleet_signals", (full,))
    return {**_tree(root, rows), "signals": [_signal(r) for r in signals]}


# ---- idempotency keys --------------------------------------------------------------------------


async def by_key(idempotency_key: str) -> str | None:
    """The id of the execution that holds ``idempotency_key``, or None."""
    key = check_text(idempotency_key, "idempotency_key")
    rows = await async_store(Settings.current()).control("fleet_by_key", (key,))
    return rows[0]["id"] if rows else None


def by_key_sync(idempotency_key: str) -> str | None:
    key = check_text(idempotency_key, "idempotency_key")
    rows = sync_store(Settings.current()).control("fleet_by_key", (key,))
    return rows[0]["id"] if rows else None
