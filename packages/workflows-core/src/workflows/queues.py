"""Queues' settings, shared by the whole fleet: concurrency, rate, pause.

They live in the database, so every worker on every host sees the same numbers; they apply
to every admission that commits after the change. ``workflows queues ...`` on the command line
does the same.

    await workflows.queues.set_limit("emails", concurrency=5, rate="100/m")
    await workflows.queues.pause("emails")
"""

from __future__ import annotations

import builtins
from typing import Any

from workflows.api import validate_queue
from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows.flow import Rate, check_limit, parse_rate
from workflows.store import async_store, sync_store

# Counts of pending work stop here: a deep backlog costs a bounded walk.
COUNT_CAP = 100_000


class _Unset:
    def __repr__(self) -> str:
        return "<unchanged>"


UNCHANGED: Any = _Unset()


def _set_args(queue: str, concurrency: Any, rate: Any, paused: bool | None) -> tuple[Any, ...]:
    validate_queue(queue)
    if concurrency is UNCHANGED and rate is UNCHANGED and paused is None:
        raise ConfigurationError("give concurrency=, rate= or both (None removes a limit)")
    set_concurrency = concurrency is not UNCHANGED
    if set_concurrency and concurrency is not None:
        check_limit("concurrency", concurrency)
    set_rate = rate is not UNCHANGED
    parsed: Rate | None = parse_rate(rate) if set_rate and rate is not None else None
    return (
        queue,
        concurrency if set_concurrency else None,
        parsed.starts if parsed else None,
        parsed.period if parsed else None,
        paused,
        set_concurrency,
        set_rate,
        paused is not None,
    )


def describe(row: dict[str, Any]) -> dict[str, Any]:
    """A queue's row as the API returns it: ``rate`` as text (``"100/m"``), or None."""
    out = {k: v for k, v in row.items() if k not in ("rate_starts", "rate_period", "updated_at")}
    starts, period = row.get("rate_starts"), row.get("rate_period")
    out["rate"] = str(Rate(starts, period)) if starts is not None and period else None
    return out


async def set_limit(
    queue: str, *, concurrency: Any = UNCHANGED, rate: Any = UNCHANGED
) -> dict[str, Any]:
    """Set a queue's fleet-wide limits: at most ``concurrency`` executions running at once,
    at most ``rate`` starts (``"100/m"``) in any window of its period. ``None`` removes a
    limit; one left out stays as it is. Returns the queue's settings."""
    args = _set_args(queue, concurrency, rate, None)
    return describe((await async_store(Settings.current()).control("set_queue", args))[0])


def set_limit_sync(
    queue: str, *, concurrency: Any = UNCHANGED, rate: Any = UNCHANGED
) -> dict[str, Any]:
    args = _set_args(queue, concurrency, rate, None)
    return describe(sync_store(Settings.current()).control("set_queue", args)[0])


async def pause(queue: str) -> dict[str, Any]:
    """Start nothing more from ``queue`` (what runs finishes); until :func:`resume`."""
    args = _set_args(queue, UNCHANGED, UNCHANGED, True)
    return describe((await async_store(Settings.current()).control("set_queue", args))[0])


def pause_sync(queue: str) -> dict[str, Any]:
    args = _set_args(queue, UNCHANGED, UNCHANGED, True)
    return describe(sync_store(Settings.current()).control("set_queue", args)[0])


async def resume(queue: str) -> dict[str, Any]:
    args = _set_args(queue, UNCHANGED, UNCHANGED, False)
    return describe((await async_store(Settings.current()).control("set_queue", args))[0])


def resume_sync(queue: str) -> dict[str, Any]:
    args = _set_args(queue, UNCHANGED, UNCHANGED, False)
    return describe(sync_store(Settings.current()).control("set_queue", args)[0])


async def get(queue: str) -> dict[str, Any]:
    """A queue's settings and load: ``concurrency``, ``rate``, ``paused``, and how many of its
    executions are ``running``, ``pending`` (runnable or due later) and ``held`` (waiting for
    a concurrency key)."""
    validate_queue(queue)
    rows = await async_store(Settings.current()).control("queue_info", (queue, COUNT_CAP))
    return describe(rows[0])


def get_sync(queue: str) -> dict[str, Any]:
    validate_queue(queue)
    rows = sync_store(Settings.current()).control("queue_info", (queue, COUNT_CAP))
    return describe(rows[0])


async def list() -> builtins.list[dict[str, Any]]:
    """Every queue with settings or a live worker, as :func:`get` describes it."""
    rows = await async_store(Settings.current()).control("queue_info", (None, COUNT_CAP))
    return [describe(r) for r in rows]


def list_sync() -> builtins.list[dict[str, Any]]:
    rows = sync_store(Settings.current()).control("queue_info", (None, COUNT_CAP))
    return [describe(r) for r in rows]


# ---- figures (``workflows queues``) -----------------------------------------------------------


def describe_stats(row: dict[str, Any]) -> dict[str, Any]:
    """A queue's figures as :func:`stats` returns them."""
    out = describe(row)
    oldest = out.pop("oldest_pending_seconds")
    out["oldest_pending_seconds"] = None if oldest is None else round(max(oldest, 0.0), 3)
    return out


def _stats_args(queue: str | None) -> tuple[str | None, int]:
    if queue is not None:
        validate_queue(queue)
    return queue, COUNT_CAP


async def stats(queue: str | None = None) -> builtins.list[dict[str, Any]]:
    """Every known queue's figures (or only ``queue``'s): its settings (``concurrency``,
    ``rate``, ``paused``) and how many of its executions are ``running``, ``pending``
    (runnable or due later), ``waiting`` (workflows waiting for a step), ``held`` (for a
    concurrency key) and ``throttled`` (runnable, held back by a limit); the age in seconds of
    its oldest runnable pending execution (``oldest_pending_seconds``, since it became due; None
    when none is), and ``completed_5m``/``failed_5m``, the ends of the last five minutes.

    Counts stop at :data:`COUNT_CAP`. Known queues: with settings, served by a registered
    worker, with pending or running executions, or with an end in the last five minutes.
    """
    rows = await async_store(Settings.current()).control("fleet_queue_stats", _stats_args(queue))
    return [describe_stats(r) for r in rows]


def stats_sync(queue: str | None = None) -> builtins.list[dict[str, Any]]:
    rows = sync_store(Settings.current()).control("fleet_queue_stats", _stats_args(queue))
    return [describe_stats(r) for r in rows]


# ---- throughput --------------------------------------------------------------------------------

#: The longest window ``throughput`` looks back over, in minutes.
MAX_THROUGHPUT_MINUTES = 24 * 60


def _throughput_args(minutes: Any) -> tuple[int]:
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int)
        or not 1 <= minutes <= MAX_THROUGHPUT_MINUTES
    ):
        raise ConfigurationError(
            f"minutes must be a whole number from 1 to {MAX_THROUGHPUT_MINUTES}"
        )
    return (minutes,)


def _series(rows: builtins.list[dict[str, Any]], minutes: int) -> dict[str, dict[str, Any]]:
    series: dict[str, dict[str, Any]] = {}
    for row in rows:
        queue = series.setdefault(
            row["queue"], {"completed": [0] * minutes, "failed": [0] * minutes}
        )
        ago = min(max(int(row["minutes_ago"]), 0), minutes - 1)
        # Oldest first, this minute last.
        queue[row["status"]][minutes - 1 - ago] += int(row["n"])
    return series


async def throughput(minutes: int = 15) -> dict[str, dict[str, Any]]:
    """Ends per minute over the last ``minutes`` minutes, for each queue with one:
    ``{queue: {"completed": [n, ...], "failed": [n, ...]}}``, oldest minute first."""
    args = _throughput_args(minutes)
    rows = await async_store(Settings.current()).control("fleet_throughput", args)
    return _series(rows, minutes)


def throughput_sync(minutes: int = 15) -> dict[str, dict[str, Any]]:
    args = _throughput_args(minutes)
    return _series(sync_store(Settings.current()).control("fleet_throughput", args), minutes)
