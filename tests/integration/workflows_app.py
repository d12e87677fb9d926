"""Workflows the integration tests run; module-level so workers can import them by path."""

from __future__ import annotations

import asyncio
from typing import Any

from workflows import (
    ActivityError,
    activity,
    get_version,
    sleep,
    wait_for_signal,
    workflow,
)

runs: dict[str, int] = {}


def ran(name: str) -> None:
    runs[name] = runs.get(name, 0) + 1


@activity(retries=3, timeout=60)
async def charge_card(amount: float, card_token: str) -> dict[str, str]:
    ran("charge_card")
    return {"transaction_id": "txn_123"}


@activity(retries=3, timeout=60)
async def send_receipt(email: str) -> None:
    ran("send_receipt")


@workflow(queue="orders", version=1, timeout=3600)
async def process_order(
    order_id: str, amount: float, email: str, card_token: str
) -> dict[str, Any]:
    charge = await charge_card.run(amount, card_token)
    await send_receipt.run(email)
    return {"order_id": order_id, "transaction_id": charge["transaction_id"]}


@workflow(queue="orders")
async def approval(order_id: str, timeout: float = 86400) -> dict[str, Any]:
    charge = await charge_card.run(10.0, "tok")
    decision = await wait_for_signal("approved", timeout=timeout)
    if not decision["approved"]:
        return {"order_id": order_id, "status": "rejected"}
    return {"order_id": order_id, "status": "approved", "txn": charge["transaction_id"]}


@workflow(queue="orders")
async def approval_or_timeout(seconds: float) -> str:
    try:
        await wait_for_signal("approved", timeout=seconds)
    except TimeoutError:
        return "timed out"
    return "approved"


@workflow(queue="orders")
async def collect_signals(count: int) -> list[Any]:
    return [await wait_for_signal("item") for _ in range(count)]


flaky_attempts: dict[str, int] = {}


@activity(queue="orders", retries=2)
async def flaky_step(key: str, failures: int) -> str:
    flaky_attempts[key] = flaky_attempts.get(key, 0) + 1
    if flaky_attempts[key] <= failures:
        raise ConnectionError(f"transient {flaky_attempts[key]}")
    return f"{key} ok"


@activity(queue="orders", retries=0, timeout=0.2)
async def slow_step(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slow done"


@workflow(queue="orders")
async def retries_seen(key: str, failures: int) -> str:
    try:
        return await flaky_step.run(key, failures)
    except ActivityError as exc:
        return f"gave up: {exc.type}: {exc.message}"


@workflow(queue="orders")
async def timeouts_seen(seconds: float, override: float | None) -> str:
    step = slow_step if override is None else slow_step.options(timeout=override)
    try:
        return await step.run(seconds)
    except ActivityError as exc:
        return f"activity failed: {exc.type}"


@workflow(queue="orders")
async def uncaught(key: str) -> None:
    await flaky_step.run(key, 10)


@activity(queue="orders")
async def double(x: int) -> int:
    ran("double")
    return x * 2


@workflow(queue="orders")
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(double.run(i) for i in range(n))))


@workflow(queue="orders")
async def sleepy(seconds: float) -> str:
    await sleep(seconds)
    return "rested"


@workflow(queue="orders")
async def child(x: int) -> int:
    return await double.run(x) + 1


@workflow(queue="orders")
async def parent(x: int) -> dict[str, int]:
    a = await child.run(x)
    b = await double.run(a)
    return {"child": a, "double": b}


@workflow(queue="orders")
async def parent_of_sleeper() -> str:
    return await sleepy.run(3600)


@workflow(queue="orders")
async def with_deadline(seconds: float) -> str:
    await sleep(seconds)
    return "never"


@activity()
async def step_a() -> str:
    ran("step_a")
    return "a"


@activity()
async def step_b() -> str:
    ran("step_b")
    return "b"


# Two versions of one workflow, as two deploys of the same code path would have them. The
# tests register version 2 under version 1's name to play the redeploy.
@workflow(queue="versioned", version=1)
async def evolving(order: str) -> list[str]:
    done = [await step_a.run()]
    await wait_for_signal("go")
    done.append("finished")
    return done


async def evolving_v2_body(order: str) -> list[str]:
    done = [await step_a.run()]
    if get_version("add_step_b", 1, 2) >= 2:
        done.append(await step_b.run())
    await wait_for_signal("go")
    done.append("finished")
    return done


async def diverging_body(order: str) -> list[str]:
    return [await step_b.run()]


# Key order a jsonb column would sort, and a float it would print as an integer.
SHAPED = {"b": 1, "a": 1e16, "c": [1.5, {"z": None, "y": "\u00e9"}]}


@activity(queue="orders")
async def shaped() -> dict[str, Any]:
    ran("shaped")
    return SHAPED


@workflow(queue="orders")
async def sees_shape(wait: bool) -> dict[str, Any]:
    value = await shaped.run()
    if wait:
        await wait_for_signal("go")
    return {"keys": list(value), "a": repr(value["a"]), "inner": list(value["c"][1])}
