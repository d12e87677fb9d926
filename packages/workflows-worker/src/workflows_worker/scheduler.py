"""Cron schedules fired by the worker fleet: registered from the code, fired on their ticks.

Every worker runs a :class:`Scheduler`, not only the elected leader: a tick is due at an
instant, and a leader's failover takes up to a heartbeat timeout (30 s by default), which
would make every schedule late by that much whenever the leader dies. Firing from every
worker costs little and is safe:

- one execution per schedule and tick is a unique key of ``executions`` (0008): two workers
  firing the same tick insert one row, whatever each read before;
- ``fire_schedule()`` also takes the schedule's row ``FOR UPDATE SKIP LOCKED`` and only if its
  next tick is still the one the worker saw due, so the workers that lose the race write
  nothing and wait for the next tick.

Ticks are computed here (cronsim, through ``workflows.schedules``) in the schedule's timezone,
from the database's clock: hosts whose clocks disagree still fire the same instants. After an
outage a schedule fires only its latest missed tick, or the latest ``MAX_CATCHUP`` with
``catchup=True`` (``workflows.schedules.due_ticks``).

The scheduler sleeps until the next tick due, at most a poll interval (so that schedules
created, changed or resumed elsewhere are seen within one), and never less than
``MIN_WAIT``. A schedule row it cannot compute (a cron expression or timezone that another
role wrote into the table, or a zone this host lacks) is logged and skipped for
``SKIP_BAD_ROW_FOR`` seconds; the others fire as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from workflows.api import Function
from workflows.config import Settings
from workflows.schedules import Schedule, due_ticks, tick_after, upsert_args
from workflows.store import WorkerStore
from workflows_worker.errors import first_line
from workflows_worker.logs import get_logger

log = get_logger(__name__)

# Schedules read due in one statement; a round with that many reads again at once.
DUE_BATCH = 100
MIN_WAIT = 0.005
SKIP_BAD_ROW_FOR = 60.0
# The same failure is logged again after this long, not every poll.
REPEAT_LOG_AFTER = 60.0


class Scheduler:
    """Registers the schedules of ``functions`` (the worker's imported functions by path),
    then fires every due tick of every schedule until ``stopping`` is set."""

    def __init__(
        self,
        store: WorkerStore,
        settings: Settings,
        functions: Mapping[str, Function[..., Any]],
        stopping: asyncio.Event,
    ) -> None:
        self._store = store
        self._settings = settings
        self._functions = dict(functions)
        self._stopping = stopping
        self._poll = settings.worker_poll_interval
        self._registered = False
        # Schedule name -> monotonic time until which its row is skipped.
        self._bad: dict[str, float] = {}
        self._logged: dict[str, float] = {}
        self.fired = 0

    async def run(self) -> None:
        while not self._stopping.is_set():
            wait = self._poll
            try:
                if not self._registered:
                    await self.register()
                wait = min(await self.fire_due(), self._poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Were this loop to end, no schedule would fire from this worker: log, go on.
                self._log_failure(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(wait, MIN_WAIT))

    def _log_failure(self, exc: Exception) -> None:
        key = f"{type(exc).__name__}: {first_line(exc)}"
        now = time.monotonic()
        if now < self._logged.get(key, 0.0):
            return
        self._logged[key] = now + REPEAT_LOG_AFTER
        if self._store.is_transient(exc):
            log.warning("firing schedules failed (%s)", first_line(exc))
        else:
            log.error("firing schedules failed", exc_info=exc)

    # ---- the code's schedules ------------------------------------------------------------

    def declared(self) -> dict[str, tuple[Function[..., Any], Schedule]]:
        """The schedules the functions declare, by schedule name."""
        found: dict[str, tuple[Function[..., Any], Schedule]] = {}
        for fn in self._functions.values():
            schedule = getattr(fn, "schedule", None)
            if schedule is None:
                continue
            name = schedule.name or fn.path
            if name in found:
                log.error(
                    "schedule %r is declared on both %s and %s: registering the first",
                    name,
                    found[name][0].path,
                    fn.path,
                )
                continue
            found[name] = (fn, schedule)
        return found

    async def register(self) -> None:
        """Write the code's schedules (source 'code'), then delete those of the functions
        imported here that their code no longer declares."""
        declared = self.declared()
        for name, (fn, schedule) in declared.items():
            try:
                args = upsert_args(name, "code", fn, schedule, self._settings)
            except Exception as exc:
                # A schedule whose arguments cannot be resolved (a concurrency_key function
                # that raises, arguments over the size limit): the others still register.
                log.error("cannot register schedule %r of %s: %s", name, fn.path, exc)
                continue
            rows = await self._store.control("upsert_schedule", args)
            if not rows:
                log.error(
                    "schedule %r of %s not registered: a schedule created with "
                    "workflows.schedules.create() has that name",
                    name,
                    fn.path,
                )
        if self._functions:
            pruned = await self._store.control(
                "prune_code_schedules", (sorted(self._functions), sorted(declared))
            )
            for row in pruned:
                log.info("deleted schedule %r: its code declares it no more", row["name"])
        if declared:
            log.info("registered schedules %s", ", ".join(sorted(declared)))
        self._registered = True

    # ---- firing --------------------------------------------------------------------------

    async def fire_due(self) -> float:
        """Fire every schedule due now; the seconds until the next tick due (inf: none)."""
        upcoming: list[datetime] = []
        while True:
            now_mono = time.monotonic()
            self._bad = {n: until for n, until in self._bad.items() if until > now_mono}
            rows = await self._store.control("due_schedules", (DUE_BATCH, sorted(self._bad)))
            head = rows[0]
            now: datetime = head["now"]
            if head["next_at"] is not None:
                upcoming.append(head["next_at"])
            due = [row for row in rows if row["name"] is not None]
            for row in due:
                after = await self._fire(row, now)
                if after is not None:
                    upcoming.append(after)
            if len(due) < DUE_BATCH:
                break
        if not upcoming:
            return float("inf")
        # `now` is the database's at the last read: less the time spent since.
        return (min(upcoming) - now).total_seconds() - (time.monotonic() - now_mono)

    async def _fire(self, row: dict[str, Any], now: datetime) -> datetime | None:
        """Fire one due schedule; its next tick (None: skipped)."""
        name = row["name"]
        try:
            first = row["next_tick"] or tick_after(row["cron"], row["timezone"], row["ticks_from"])
            if first is None:
                raise ValueError("its cron expression has no tick in the next 50 years")
            ticks, after = due_ticks(row["cron"], row["timezone"], first, now, row["catchup"])
            if after is None:
                raise ValueError("its cron expression has no tick in the next 50 years")
        except Exception as exc:
            self._bad[name] = time.monotonic() + SKIP_BAD_ROW_FOR
            log.error(
                "schedule %r skipped for %.0f s: cannot compute its ticks from cron %r in "
                "timezone %r (%s: %s)",
                name,
                SKIP_BAD_ROW_FOR,
                row["cron"],
                row["timezone"],
                type(exc).__name__,
                first_line(exc),
            )
            return None
        try:
            result = await self._store.control(
                "fire_schedule", (name, row["next_tick"], ticks, after)
            )
        except Exception as exc:
            if self._store.is_transient(exc):
                raise
            # A row the database refuses to turn into executions (written by hand past the
            # checks): the others still fire.
            self._bad[name] = time.monotonic() + SKIP_BAD_ROW_FOR
            log.error("schedule %r skipped for %.0f s: %s", name, SKIP_BAD_ROW_FOR, exc)
            return None
        fired = result[0]["fired"] if result else None
        if fired:
            self.fired += fired
            log.info(
                "schedule %r fired %d tick%s (%s)",
                name,
                fired,
                "" if fired == 1 else "s",
                ", ".join(t.astimezone(UTC).isoformat() for t in ticks[-3:]),
            )
        # Fired here or by another worker meanwhile: the next tick is the same.
        return after
