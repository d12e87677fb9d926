"""Named rate limits, shared by every execution with that ``rate_key``, whatever its queue.

    await workflows.rate_limits.set("api:stripe", "100/s")

    @job(queue="billing", rate_key="api:stripe")
    async def refund(charge_id): ...

At most that many executions with the key start in any window of the period, across the
fleet; the others wait (they are not dropped) and start as the window frees. A key with no
rate set limits nothing. ``workflows rate-limits ...`` on the command line does the same.
"""

from __future__ import annotations

import builtins
from typing import Any

from workflows.config import Settings
from workflows.flow import Rate, check_key, parse_rate
from workflows.store import async_store, sync_store


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": row["key"],
        "rate": str(Rate(row["starts"], row["period"])),
        "recent_starts": row["recent"],
    }


async def set(key: str, rate: str) -> None:
    """Allow at most ``rate`` (``"100/s"``, ``"1000/h"``, ``"10/30s"``) starts of executions
    with ``rate_key=key`` in any window of its period."""
    check_key("rate key", key)
    parsed = parse_rate(rate)
    await async_store(Settings.current()).control(
        "set_rate_limit", (key, parsed.starts, parsed.period)
    )


def set_sync(key: str, rate: str) -> None:
    check_key("rate key", key)
    parsed = parse_rate(rate)
    sync_store(Settings.current()).control("set_rate_limit", (key, parsed.starts, parsed.period))


async def delete(key: str) -> bool:
    """Remove a rate: executions with the key start unlimited. Whether there was one."""
    check_key("rate key", key)
    rows = await async_store(Settings.current()).control("set_rate_limit", (key, None, None))
    return bool(rows[0]["existed"])


def delete_sync(key: str) -> bool:
    check_key("rate key", key)
    rows = sync_store(Settings.current()).control("set_rate_limit", (key, None, None))
    return bool(rows[0]["existed"])


async def list() -> builtins.list[dict[str, Any]]:
    """Every rate set: ``key``, ``rate`` and the starts in its current window."""
    rows = await async_store(Settings.current()).control("rate_limit_info", (None,))
    return [_row(r) for r in rows]


def list_sync() -> builtins.list[dict[str, Any]]:
    rows = sync_store(Settings.current()).control("rate_limit_info", (None,))
    return [_row(r) for r in rows]
