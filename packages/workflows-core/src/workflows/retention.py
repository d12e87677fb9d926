"""Pruning: finished executions deleted with their steps, signals and children.

Each status is kept for its retention (``WORKFLOWS_RETENTION`` and the per-status
``WORKFLOWS_RETENTION_COMPLETED`` / ``_FAILED`` / ``_CANCELLED``); the maintenance leader
prunes on its own, and ``workflows prune`` or :func:`prune` do it on demand.

A workflow goes with everything under it, never in part, and only once all of it has
finished: a tree is pruned when its root (an execution without a parent) finished before its
status's cutoff and nothing under it still runs or waits.

    counts = await workflows.prune(older_than="30d", statuses=["failed"], dry_run=True)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from workflows.config import Settings
from workflows.durations import to_seconds
from workflows.errors import ConfigurationError
from workflows.store import async_store, sync_store

STATUSES = ("completed", "failed", "cancelled")
# Roots per statement: with their trees, a few thousand rows deleted in a transaction of tens
# of milliseconds (see benchmarks/README.md, retention).
BATCH = 1000
# Between two batches: other sessions get the rows' pages and locks, the WAL writer catches up.
PAUSE = 0.02


@dataclass
class Pruned:
    """What a prune deleted (or, in a dry run, would delete)."""

    roots: int = 0
    executions: int = 0  # roots included
    steps: int = 0
    signals: int = 0

    def add(self, row: dict[str, Any]) -> None:
        self.roots += int(row["roots"])
        self.executions += int(row["executions"])
        self.steps += int(row["steps"])
        self.signals += int(row["signals"])

    def as_dict(self) -> dict[str, int]:
        return {
            "roots": self.roots,
            "executions": self.executions,
            "steps": self.steps,
            "signals": self.signals,
        }


def cutoffs(
    settings: Settings, older_than: Any = None, statuses: Iterable[str] | None = None
) -> dict[str, float | None]:
    """Seconds each status is kept (None: not pruned): ``older_than`` for every status chosen,
    else the configured retention; statuses not chosen are not pruned."""
    if isinstance(statuses, str):
        # A lone "failed" would be read as its letters.
        statuses = [statuses]
    chosen = list(STATUSES) if statuses is None else list(statuses)
    for status in chosen:
        if status not in STATUSES:
            raise ConfigurationError(
                f"status {status!r} cannot be pruned: choose from {', '.join(STATUSES)} "
                "(running, pending and waiting executions are never pruned)"
            )
    if not chosen:
        raise ConfigurationError("statuses is empty: nothing would be pruned")
    seconds: float | None = None
    if older_than is not None:
        try:
            seconds = to_seconds(older_than, "older_than")
        except ValueError as exc:
            raise ConfigurationError(f"older_than: {exc}") from None
        if seconds == 0:
            raise ConfigurationError(
                "older_than must be a length of time; 0 / forever would prune nothing"
            )
    out: dict[str, float | None] = {}
    for status in STATUSES:
        if status not in chosen:
            out[status] = None
        elif seconds is not None:
            out[status] = seconds
        else:
            out[status] = settings.retention_for(status)
    return out


def statement_args(
    keep: dict[str, float | None], batch: int | None, dry_run: bool
) -> tuple[Any, ...]:
    """The ``prune`` statement's arguments (see migration 0009)."""
    return (keep["completed"], keep["failed"], keep["cancelled"], batch, dry_run)


def anything_to_prune(keep: dict[str, float | None]) -> bool:
    return any(v is not None for v in keep.values())


async def prune(
    older_than: Any = None, statuses: Iterable[str] | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Delete finished trees older than ``older_than`` (text like ``"7d"``, seconds or a
    timedelta; None: each status's configured retention) of ``statuses`` (default: completed,
    failed and cancelled), in batches; the counts deleted: ``roots``, ``executions`` (roots
    included), ``steps``, ``signals``. ``dry_run``: count what would go, delete nothing."""
    settings = Settings.current()
    keep = cutoffs(settings, older_than, statuses)
    done = Pruned()
    if not anything_to_prune(keep):
        return done.as_dict()
    store = async_store(settings)
    if dry_run:
        done.add((await store.control("prune", statement_args(keep, None, True)))[0])
        return done.as_dict()
    while True:
        row = (await store.control("prune", statement_args(keep, BATCH, False)))[0]
        done.add(row)
        if int(row["roots"]) < BATCH:
            return done.as_dict()
        await asyncio.sleep(PAUSE)


def prune_sync(
    older_than: Any = None, statuses: Iterable[str] | None = None, dry_run: bool = False
) -> dict[str, int]:
    """:func:`prune` for sync callers."""
    settings = Settings.current()
    keep = cutoffs(settings, older_than, statuses)
    done = Pruned()
    if not anything_to_prune(keep):
        return done.as_dict()
    store = sync_store(settings)
    if dry_run:
        done.add(store.control("prune", statement_args(keep, None, True))[0])
        return done.as_dict()
    while True:
        row = store.control("prune", statement_args(keep, BATCH, False))[0]
        done.add(row)
        if int(row["roots"]) < BATCH:
            return done.as_dict()
        time.sleep(PAUSE)
