"""Cron schedules: declared on ``@job``/``@workflow`` or managed at run time.

A schedule enqueues its function on every tick of a cron expression read in an IANA timezone.
Workers fire the ticks (``workflows_worker.scheduler``); the database holds one execution per
schedule and tick at most (a unique key on ``executions (schedule_name, schedule_tick)``), so
however many workers fire, and whenever they crash or restart, no tick runs twice.

Expressions have five fields (minute hour day-of-month month day-of-week) or six, the first
being seconds (``*/10 * * * * *``: every ten seconds), plus the nicknames ``@hourly``,
``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly`` (``@annually``). They
are read by cronsim, which follows Debian's cron, daylight saving time included: a daily time
that a spring-forward skips runs at the first instant after the gap, one that a fall-back
repeats runs once; expressions of a granularity finer than an hour run on every real instant
that matches.

Missed ticks (no worker up, a long pause of the fleet): a schedule fires the latest missed
tick alone, or the latest :data:`MAX_CATCHUP` with ``catchup=True``; older ones are skipped.
Ticks that fall while a schedule is paused never fire, not even on resume.

The run-time API (each with a ``_sync`` twin): :func:`create`, :func:`pause`, :func:`resume`,
:func:`delete`, :func:`list` and :func:`trigger`. Bad input raises ``ConfigurationError``
before anything is stored; an unknown name :class:`ScheduleNotFoundError`.
"""

from __future__ import annotations

import builtins
import importlib
import re
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim

from workflows import codec
from workflows.config import Settings
from workflows.errors import ConfigurationError, ScheduleNotFoundError, WorkflowsError
from workflows.errors import preview as _preview
from workflows.store import async_store, sync_store

if TYPE_CHECKING:
    from workflows.api import Function

__all__ = [
    "MAX_CATCHUP",
    "Schedule",
    "ScheduleNotFoundError",
    "create",
    "create_sync",
    "delete",
    "delete_sync",
    "due_ticks",
    "list",
    "list_sync",
    "pause",
    "pause_sync",
    "resume",
    "resume_sync",
    "tick_after",
    "trigger",
    "trigger_sync",
]

# How many missed ticks ``catchup=True`` fires at most after an outage (the latest ones): a
# fleet down for a day must not come back to 86,400 runs of a schedule that ticks every second.
MAX_CATCHUP = 1000
MAX_CRON_CHARS = 200
MAX_NAME_CHARS = 255
_NAME = re.compile(r"\w[\w.:/\-]*")
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Missed ticks are counted forward from the first one up to this many more than are kept; a
# longer gap is walked back from now (cheap either way: about a microsecond a tick).
_FORWARD_SLACK = 1000
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Schedule:
    """When and with what a function runs on its own: ``cron`` in ``timezone``.

    ``args``/``kwargs`` are the call's arguments (JSON, as for ``.queue()``); ``catchup``:
    after an outage, fire every missed tick (the latest :data:`MAX_CATCHUP`) rather than only
    the latest; ``name``: the schedule's name (default: the function's import path).
    """

    cron: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    catchup: bool = False
    name: str | None = None

    def validated(self) -> Schedule:
        """This schedule with its cron expression normalised; ``ConfigurationError`` if any
        part is invalid."""
        cron = check_cron(self.cron)
        check_timezone(self.timezone)
        args, kwargs = check_arguments(self.args, self.kwargs)
        if not isinstance(self.catchup, bool):
            raise ConfigurationError(f"catchup must be True or False, got {self.catchup!r}")
        if self.name is not None:
            check_name(self.name)
        if tick_after(cron, self.timezone, datetime.now(UTC)) is None:
            raise ConfigurationError(f"cron expression {cron!r} has no tick in the next 50 years")
        return replace(self, cron=cron, args=args, kwargs=kwargs)


# ---- validation ------------------------------------------------------------------------------


def check_name(name: Any) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid schedule name {_preview(name)}: use 1-{MAX_NAME_CHARS} letters, digits, "
            "'_', '.', ':', '/' or '-', starting with a letter, digit or '_'"
        )
    return name


def check_cron(cron: Any) -> str:
    """``cron`` with its fields separated by one space; ``ConfigurationError`` if invalid."""
    if not isinstance(cron, str):
        raise ConfigurationError(f"cron expression must be a string, got {type(cron).__name__}")
    normal = " ".join(cron.split())
    if not normal or len(normal) > MAX_CRON_CHARS or not normal.isascii():
        raise ConfigurationError(
            f"invalid cron expression {_preview(cron)}: 5 fields (minute hour day month "
            "weekday), 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly"
        )
    try:
        _parse(normal)
    # cronsim raises CronSimError for what it recognises as wrong, and may raise others on
    # input it does not expect: whatever it is, the expression is not one it can run.
    except Exception as exc:
        raise ConfigurationError(
            f"invalid cron expression {_preview(cron)}: {exc or type(exc).__name__} (5 fields: "
            "minute hour day month weekday; 6 with seconds first)"
        ) from None
    return normal


def check_timezone(timezone: Any) -> ZoneInfo:
    if not isinstance(timezone, str):
        raise ConfigurationError(f"timezone must be a string, got {type(timezone).__name__}")
    try:
        return _zone(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigurationError(
            f"unknown timezone {_preview(timezone)}: give an IANA name such as 'Europe/Berlin' "
            "or 'UTC' (a system without a time zone database needs `pip install tzdata`)"
        ) from None


def check_arguments(args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments as a tuple and a dict, if JSON can hold them."""
    if not isinstance(args, tuple | builtins.list):
        raise ConfigurationError(f"schedule args must be a tuple or list, got {_preview(args)}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigurationError(
            f"schedule kwargs must be a dict with string keys, got {_preview(kwargs)}"
        )
    try:
        codec.current().encode_call(tuple(args), kwargs, max_bytes=None)
    except WorkflowsError as exc:
        raise ConfigurationError(f"schedule arguments: {exc}") from None
    return tuple(args), dict(kwargs)


@lru_cache(maxsize=256)
def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


def _expression(cron: str) -> str:
    return _NICKNAMES.get(cron.lower(), cron)


def _parse(cron: str, start: datetime | None = None, *, reverse: bool = False) -> CronSim:
    return CronSim(_expression(cron), start or datetime.now(UTC), reverse=reverse)


# ---- ticks -----------------------------------------------------------------------------------


def tick_after(cron: str, timezone: str, after: datetime) -> datetime | None:
    """The first tick strictly after ``after`` (an aware datetime), in UTC; None if there is
    none in the next 50 years. Raises what parsing raises for an invalid expression or zone."""
    after = after.astimezone(UTC)
    ticks = _parse(cron, after.astimezone(_zone(timezone)))
    # Around a fall-back, cronsim may first yield a tick of the hour now repeated (a wall-clock
    # time already passed once): never more than a couple before the next real one.
    for _ in range(8):
        try:
            tick = next(ticks).astimezone(UTC)
        except StopIteration:
            return None
        if tick > after:
            return tick
    return None


def due_ticks(
    cron: str, timezone: str, first: datetime, now: datetime, catchup: bool
) -> tuple[builtins.list[datetime], datetime | None]:
    """What a schedule fires at ``now`` when ``first`` is its earliest unfired tick.

    Returns the ticks to fire (oldest first: the latest missed one, or the latest
    :data:`MAX_CATCHUP` with ``catchup``) and the tick after ``now`` (None: none in 50 years).
    Nothing is due while ``first`` is after ``now``.
    """
    first, now = first.astimezone(UTC), now.astimezone(UTC)
    if first > now:
        return [], first
    keep = MAX_CATCHUP if catchup else 1
    kept: deque[datetime] = deque(maxlen=keep)
    tick: datetime | None = first
    steps = 0
    while tick is not None and tick <= now and steps < keep + _FORWARD_SLACK:
        kept.append(tick)
        tick = tick_after(cron, timezone, tick)
        steps += 1
    if tick is not None and tick <= now:
        # A gap longer than the walk: the latest ticks, walked back from now.
        latest = _latest_ticks(cron, timezone, first, now, keep)
        if latest:
            kept = deque(latest, maxlen=keep)
    return builtins.list(kept), tick_after(cron, timezone, now)


def _latest_ticks(
    cron: str, timezone: str, first: datetime, now: datetime, keep: int
) -> builtins.list[datetime]:
    """Up to ``keep`` ticks in [first, now], the latest, oldest first."""
    zone = _zone(timezone)
    # cronsim walks back from the second before its start: start a second after now.
    start = (now.replace(microsecond=0) + _SECOND).astimezone(zone)
    found: set[datetime] = set()
    for back in _parse(cron, start, reverse=True):
        if len(found) >= keep:
            break
        back = back.astimezone(UTC)
        if back < first:
            break
        # Each as the forward walk spells it (the two can differ by a DST quirk).
        tick = tick_after(cron, timezone, back - _SECOND)
        if tick is not None and first <= tick <= now:
            found.add(tick)
    return sorted(found)[-keep:]


# ---- the run-time API ------------------------------------------------------------------------


def _function(fn: Any) -> Function[..., Any]:
    """A decorated job or workflow, or its import path (``module:qualname``)."""
    from workflows.api import REGISTRY, Function

    if isinstance(fn, str):
        found = REGISTRY.get(fn)
        if found is None:
            module, sep, _ = fn.partition(":")
            if not sep or not module:
                raise ConfigurationError(
                    f"{_preview(fn)} is not a function path: give 'module:function' or the "
                    "decorated function itself"
                )
            try:
                importlib.import_module(module)
            except Exception as exc:
                raise ConfigurationError(
                    f"cannot import {module!r} for {fn!r}: {type(exc).__name__}: {exc}"
                ) from None
            found = REGISTRY.get(fn)
        if found is None:
            raise ConfigurationError(f"{fn!r} is not a function decorated with @job or @workflow")
        fn = found
    if not isinstance(fn, Function):
        raise ConfigurationError(
            f"a schedule runs a function decorated with @job or @workflow, got {_preview(fn)}"
        )
    if fn.kind not in ("job", "workflow"):
        raise ConfigurationError(
            f"{fn.path} is an {fn.kind}: activities run inside workflows; schedule a job or a "
            "workflow"
        )
    return fn


def upsert_args(
    name: str,
    source: str,
    fn: Function[..., Any],
    schedule: Schedule,
    settings: Settings,
    *,
    queue: str | None = None,
    priority: int | None = None,
    retries: int | None = None,
    timeout: float | None = None,
) -> tuple[Any, ...]:
    """The parameters of the ``upsert_schedule`` statement: the schedule, and what each of its
    ticks enqueues, resolved as ``fn.options(...).queue(*args, **kwargs)`` would now."""
    from workflows.api import CallOptions

    opts = CallOptions(queue=queue, priority=priority, timeout=timeout, retries=retries)
    try:
        r = fn.request(opts.validated(), schedule.args, schedule.kwargs, settings)
    except WorkflowsError as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"schedule {name!r}: {exc}") from None
    return (
        name,
        source,
        r.kind,
        r.name,
        r.queue,
        r.priority,
        r.args,
        r.max_retries,
        None if r.timeout is None else float(r.timeout),
        r.version,
        None if r.workflow_timeout is None else float(r.workflow_timeout),
        r.concurrency_key,
        r.concurrency_limit,
        r.rate_key,
        schedule.cron,
        schedule.timezone,
        schedule.catchup,
    )


def _create_call(
    name: str,
    fn: Any,
    cron: str,
    args: tuple[Any, ...] | builtins.list[Any],
    kwargs: dict[str, Any] | None,
    timezone: str,
    catchup: bool,
    options: dict[str, Any],
) -> tuple[Any, ...]:
    check_name(name)
    schedule = Schedule(
        cron,
        tuple(args) if isinstance(args, builtins.list) else args,
        kwargs if kwargs is not None else {},
        timezone,
        catchup,
        name,
    )
    schedule = schedule.validated()
    return upsert_args(name, "api", _function(fn), schedule, Settings.current(), **options)


def _created(name: str, rows: builtins.list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        raise ConfigurationError(
            f"schedule {name!r} is declared in code (schedule= on its decorator): change it "
            "there, or give this one another name"
        )
    return describe(rows[0])


def _found(name: str, rows: builtins.list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        raise ScheduleNotFoundError(f"no schedule {name!r}")
    return rows[0]


def describe(row: dict[str, Any]) -> dict[str, Any]:
    """A schedule as :func:`list` and ``workflows schedules list --json`` show it."""
    # Unwrapped if this process's codec can (typed values in their tagged JSON form).
    call = codec.current().view(codec.decode(row["args"]))
    if (
        isinstance(call, dict)
        and codec.WRAPPED_KEY not in call
        and isinstance(call.get("args", []), builtins.list)
        and isinstance(call.get("kwargs", {}), dict)
    ):
        args, kwargs = call.get("args", []), call.get("kwargs", {})
    else:
        # Not the {"args": ..., "kwargs": ...} this module writes (a row written by hand, or
        # encrypted for a key this process lacks): shown as it is rather than failing the list.
        args, kwargs = row["args"], None
    next_tick = row["next_tick"]
    if next_tick is None and not row["paused"]:
        # Not yet computed by a worker (new, changed or resumed): what it will compute.
        try:
            next_tick = tick_after(row["cron"], row["timezone"], row["ticks_from"])
        except Exception:
            next_tick = None
    return {
        "name": row["name"],
        "function": row["function_name"],
        "kind": row["kind"],
        "queue": row["queue"],
        "cron": row["cron"],
        "timezone": row["timezone"],
        "catchup": row["catchup"],
        "paused": row["paused"],
        "source": row["source"],
        "args": args,
        "kwargs": kwargs,
        "next_tick": _iso(next_tick),
        "last_tick": _iso(row["last_tick"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


async def create(
    name: str,
    fn: Any,
    cron: str,
    args: tuple[Any, ...] | builtins.list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    timezone: str = "UTC",
    catchup: bool = False,
    queue: str | None = None,
    priority: int | None = None,
    retries: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Create the schedule ``name`` running ``fn`` (a decorated job or workflow, or its
    import path) with ``args``/``kwargs`` on every tick of ``cron`` in ``timezone``, or
    replace the one created so before (a paused one stays paused). ``queue``, ``priority``,
    ``retries`` and ``timeout`` override the decorator's, as ``fn.options()`` would.

    Returns the schedule as :func:`list` shows it. ``ConfigurationError`` for bad input, and
    for a name that a schedule declared in code has: nothing is stored.
    """
    options = {"queue": queue, "priority": priority, "retries": retries, "timeout": timeout}
    call = _create_call(name, fn, cron, args, kwargs, timezone, catchup, options)
    return _created(name, await async_store().control("upsert_schedule", call))


def create_sync(
    name: str,
    fn: Any,
    cron: str,
    args: tuple[Any, ...] | builtins.list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    timezone: str = "UTC",
    catchup: bool = False,
    queue: str | None = None,
    priority: int | None = None,
    retries: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    options = {"queue": queue, "priority": priority, "retries": retries, "timeout": timeout}
    call = _create_call(name, fn, cron, args, kwargs, timezone, catchup, options)
    return _created(name, sync_store().control("upsert_schedule", call))


async def pause(name: str) -> None:
    """Stop firing ``name``'s ticks until :func:`resume` (a worker restart does not resume)."""
    _found(name, await async_store().control("pause_schedule", (name,)))


def pause_sync(name: str) -> None:
    _found(name, sync_store().control("pause_schedule", (name,)))


async def resume(name: str) -> None:
    """Fire ``name``'s ticks again, from its first tick after now: ticks that fell while it
    was paused never fire. Resuming a schedule that is not paused changes nothing."""
    _found(name, await async_store().control("resume_schedule", (name,)))


def resume_sync(name: str) -> None:
    _found(name, sync_store().control("resume_schedule", (name,)))


async def delete(name: str) -> dict[str, Any]:
    """Delete the schedule (its executions stay). One declared in code is registered again by
    the next worker that starts with it: remove it from the code, or pause it. Returns the
    deleted schedule's ``name`` and ``source`` (``code`` or ``api``)."""
    return _found(name, await async_store().control("delete_schedule", (name,)))


def delete_sync(name: str) -> dict[str, Any]:
    return _found(name, sync_store().control("delete_schedule", (name,)))


async def list() -> builtins.list[dict[str, Any]]:
    """Every schedule, by name (see :func:`describe` for the fields)."""
    return [describe(row) for row in await async_store().control("list_schedules")]


def list_sync() -> builtins.list[dict[str, Any]]:
    return [describe(row) for row in sync_store().control("list_schedules")]


async def trigger(name: str) -> str:
    """Enqueue one run of the schedule now, outside its ticks (paused or not); its id. The
    run shows the schedule's name and no tick."""
    return str(_found(name, await async_store().control("trigger_schedule", (name,)))["id"])


def trigger_sync(name: str) -> str:
    return str(_found(name, sync_store().control("trigger_schedule", (name,)))["id"])
