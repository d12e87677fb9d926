"""The fleet's workers as their heartbeats show them, for dashboards and ``workflows workers``.

    for w in await workflows.workers.list():
        print(w["hostname"], w["pid"], w["running"], "alive" if w["alive"] else "dead")

A worker is alive while its last heartbeat is younger than ``WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT``
(the same test the fleet uses to recover a dead worker's executions); a dead one is listed until
a live worker recovers it and removes its row.
"""

from __future__ import annotations

import builtins
from typing import Any

from workflows.config import Settings
from workflows.executions import iso_utc
from workflows.store import async_store, sync_store

__all__ = ["list", "list_sync"]


def describe(row: dict[str, Any]) -> dict[str, Any]:
    """A heartbeat row as :func:`list` returns it."""
    return {
        "worker_id": row["worker_id"],
        "hostname": row["hostname"],
        "pid": row["pid"],
        "queues": builtins.list(row["queues"]),
        "code_version": row["code_version"],
        "running": row["running"],
        "running_bound": row["running_bound"],
        "started_at": iso_utc(row["started_at"]),
        "last_heartbeat": iso_utc(row["last_heartbeat"]),
        "beat_age": round(max(row["beat_age"], 0.0), 3),
        "alive": row["alive"],
    }


async def list() -> builtins.list[dict[str, Any]]:
    """Every registered worker: ``worker_id``, ``hostname``, ``pid``, ``queues``,
    ``code_version``, ``running`` (executions it runs now), ``running_bound``, ``started_at``,
    ``last_heartbeat`` (ISO-8601, UTC), ``beat_age`` (seconds since it) and ``alive``."""
    settings = Settings.current()
    rows = await async_store(settings).control(
        "fleet_workers", (settings.worker_heartbeat_timeout,)
    )
    return [describe(r) for r in rows]


def list_sync() -> builtins.list[dict[str, Any]]:
    settings = Settings.current()
    rows = sync_store(settings).control("fleet_workers", (settings.worker_heartbeat_timeout,))
    return [describe(r) for r in rows]
