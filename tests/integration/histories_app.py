"""The order workflow whose histories tests/integration/test_histories*.py export and replay.

It plays three deploys of the same code path, picked by ``DEPLOY`` (``HISTORIES_APP_DEPLOY``
for a subprocess, monkeypatched in-process): ``v1``, the code that writes the histories;
``guarded``, a new step behind ``get_version``; ``unguarded``, the same step without it.
"""

from __future__ import annotations

import os
from typing import Any

from workflows import ActivityError, activity, get_version, sleep, wait_for_signal, workflow

DEPLOY = os.environ.get("HISTORIES_APP_DEPLOY", "v1")
Q = "histories"

ran: list[str] = []


@activity(queue=Q, retries=0)
async def charge(order_id: str, amount: float) -> dict[str, Any]:
    ran.append("charge")
    return {"transaction_id": f"txn-{order_id}", "amount": amount}


@activity(queue=Q, retries=0)
async def reserve(order_id: str) -> str:
    ran.append("reserve")
    raise ValueError(f"nothing left for {order_id}")


@activity(queue=Q, retries=0)
async def fraud_check(order_id: str) -> bool:
    ran.append("fraud_check")
    return True


@activity(queue=Q, retries=0)
async def pack(order_id: str, gift: bool) -> str:
    ran.append("pack")
    return f"{'gift ' if gift else ''}box for {order_id}"


@workflow(queue=Q)
async def ship(order_id: str, gift: bool) -> dict[str, Any]:
    return {"box": await pack.run(order_id, gift)}


@workflow(queue=Q, version=1)
async def order(order_id: str, amount: float, *, pause: float = 0.05) -> dict[str, Any]:
    charged = await charge.run(order_id, amount)
    # The new step: behind get_version (guarded), or not (unguarded).
    guarded = DEPLOY == "guarded" and get_version("fraud_check", 1, 2) >= 2
    if guarded or DEPLOY == "unguarded":
        await fraud_check.run(order_id)
    try:
        reserved: str | None = await reserve.run(order_id)
    except ActivityError as exc:
        reserved = exc.message
    gift = get_version("gift_wrap", 1, 2) >= 2
    shipped = await ship.run(order_id, gift)
    await sleep(pause)
    approval = await wait_for_signal("approved", timeout=3600)
    return {
        "transaction_id": charged["transaction_id"],
        "reserved": reserved,
        "box": shipped["box"],
        "approved_by": approval["by"],
    }
