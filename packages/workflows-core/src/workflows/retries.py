"""Retrying by hand: a failed or cancelled execution starts again as a new attempt.

    await workflows.retry(execution_id)
    await workflows.retry_many(queue="emails", status="failed", since="2h")

A job starts again from the beginning; a workflow resumes from its history: the steps that
completed are read back by replay, never run again, and only the step that ended it (a failed
activity or child, a timed-out signal wait, or the steps a cancel or its deadline closed) runs
again. ``workflows retry ...`` on the command line does the same. See the README's
"Retrying and requeueing" for what a retry resets and how the retry budget works after it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows.api import _check_text, validate_queue
from workflows.config import Settings
from workflows.durations import age_seconds
from workflows.errors import ConfigurationError, ExecutionNotFoundError, NotRetryableError, preview
from workflows.store import async_store, sync_store

# A bulk retry locks and retries this many executions per transaction: a short lock on each
# batch, however many match.
BATCH = 100
RETRYABLE_STATUSES = ("failed", "cancelled")
# Function names are module paths: longer than a queue's name may be.
_MAX_FUNCTION_CHARS = 1000


def _canonical_id(execution_id: Any) -> str:
    try:
        return str(uuid.UUID(str(execution_id)))
    except ValueError:
        raise ExecutionNotFoundError(
            f"no execution {preview(execution_id)} (ids are UUIDs)"
        ) from None


def _outcome(row: dict[str, Any]) -> dict[str, Any]:
    """The new state of a retried execution, or the error that says why it was not."""
    what = row["outcome"]
    ident = row["id"]
    if what == "missing":
        raise ExecutionNotFoundError(f"no execution {ident}")
    if what == "child":
        raise NotRetryableError(
            f"{row['kind']} {ident} is a step of workflow {row['detail']}: retry that "
            "workflow instead (it runs this step again)"
        )
    if what == "not_final":
        raise NotRetryableError(
            f"{row['kind']} {ident} is {row['status']}: only a failed or cancelled "
            "execution can be retried"
        )
    if what == "busy":
        raise NotRetryableError(
            f"workflow {ident}: execution {row['detail']} under it is still being stopped; "
            "retry once it has stopped"
        )
    return {"id": ident, "kind": row["kind"], "status": row["status"], "attempts": row["attempts"]}


async def retry(execution_id: str) -> dict[str, Any]:
    """Start a failed or cancelled execution again; its new state (``id``, ``kind``,
    ``status``: ``pending``, ``attempts`` so far).

    Raises ``ExecutionNotFoundError`` for an unknown or malformed id and
    ``NotRetryableError`` for one not failed or cancelled, for an activity or child workflow
    (retry its root workflow), and for a workflow something under which is still being
    stopped. Of two retries of the same id at once, one retries it and the other raises
    ``NotRetryableError`` (it is pending by then).
    """
    args = (_canonical_id(execution_id),)
    rows = await async_store(Settings.current()).control("retry_execution", args)
    return _outcome(rows[0])


def retry_sync(execution_id: str) -> dict[str, Any]:
    args = (_canonical_id(execution_id),)
    return _outcome(sync_store(Settings.current()).control("retry_execution", args)[0])


def parse_time(value: Any, *, now: datetime | None = None, what: str = "time") -> datetime:
    """An instant: a timezone-aware ``datetime``, ISO-8601 text (UTC unless it says), or a
    duration ago (``"30s"``, ``"30m"``, ``"2h"``, ``"7d"``, ``"1w"``)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError(f"{what} must be timezone-aware, got {value.isoformat()}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"{what} must be an ISO-8601 time or a duration ago like 2h, got {value!r}"
        )
    seconds = age_seconds(value)
    if seconds is not None:
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:
            raise ConfigurationError(f"{what} {value!r} is too far back") from None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigurationError(
            f"{what} must be an ISO-8601 time or a duration ago (30m, 2h, 7d), got {value!r}"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _filters(
    queue: str,
    status: str,
    name: str | None,
    since: Any,
    until: Any,
    limit: int | None,
) -> tuple[str, str, str | None, datetime | None, datetime | None, int | None]:
    validate_queue(queue)
    if status not in RETRYABLE_STATUSES:
        raise ConfigurationError(f"status must be 'failed' or 'cancelled', got {status!r}")
    if name is not None:
        _check_text("name", name, max_chars=_MAX_FUNCTION_CHARS)
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2**31 - 1
    ):
        raise ConfigurationError(f"limit must be a whole number from 1 up, got {limit!r}")
    now = datetime.now(UTC)
    start = None if since is None else parse_time(since, now=now, what="since")
    end = None if until is None else parse_time(until, now=now, what="until")
    if start is not None and end is not None and start >= end:
        raise ConfigurationError(f"since ({start.isoformat()}) must be before until")
    return queue, status, name, start, end, limit


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("finished_at", "detail", "error", "outcome")}
    finished = row.get("finished_at")
    out["finished_at"] = finished.isoformat() if isinstance(finished, datetime) else finished
    if "outcome" in row and row["outcome"] != "retried":
        try:
            _outcome(row)
        except (NotRetryableError, ExecutionNotFoundError) as exc:
            out["skipped"] = str(exc)
    return out


class _Walk:
    """The bulk retry's batches: the statement, its arguments, and the cursor between them."""

    def __init__(self, filters: tuple[Any, ...], dry_run: bool) -> None:
        self.queue, self.status, self.name, self.since, self.until, self.limit = filters
        self.statement = "retry_candidates" if dry_run else "retry_batch"
        self.after: tuple[Any, Any] = (None, None)
        self.found: list[dict[str, Any]] = []
        self.asked = 0
        self.done = False

    def args(self) -> tuple[Any, ...]:
        self.asked = BATCH if self.limit is None else min(BATCH, self.limit - len(self.found))
        return (self.queue, self.status, self.name, self.since, self.until, *self.after, self.asked)

    def take(self, rows: list[dict[str, Any]]) -> None:
        self.found.extend(_row(r) for r in rows)
        if rows:
            # The cursor: a match that stays (skipped) is not read again.
            self.after = (rows[-1]["finished_at"], rows[-1]["id"])
        full = self.limit is not None and len(self.found) >= self.limit
        self.done = full or len(rows) < self.asked


async def retry_many(
    *,
    queue: str,
    status: str = "failed",
    name: str | None = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Retry every failed (or cancelled) root execution of ``queue`` that matches, in the
    order they ended, in batches of ``BATCH`` (one transaction each).

    ``name``: only this function; ``since``/``until``: ended at or after / before (a
    ``datetime``, ISO-8601 text, or a duration ago: ``"2h"``); ``limit``: at most this many.
    ``dry_run``: list what would be retried and change nothing. Returns one dict per match
    (``id``, ``kind``, ``name``, ``queue``, ``status``, ``attempts``, ``finished_at``); one
    that could not be retried (retried meanwhile by someone else, or still stopping) has
    ``skipped``: why.
    """
    walk = _Walk(_filters(queue, status, name, since, until, limit), dry_run)
    store = async_store(Settings.current())
    while not walk.done:
        walk.take(await store.control(walk.statement, walk.args()))
    return walk.found


def retry_many_sync(
    *,
    queue: str,
    status: str = "failed",
    name: str | None = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    walk = _Walk(_filters(queue, status, name, since, until, limit), dry_run)
    store = sync_store(Settings.current())
    while not walk.done:
        walk.take(store.control(walk.statement, walk.args()))
    return walk.found


__all__ = [
    "BATCH",
    "parse_time",
    "retry",
    "retry_many",
    "retry_many_sync",
    "retry_sync",
]
