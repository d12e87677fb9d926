"""Functions the tracing tests run; module-level so workers can import them by path."""

from __future__ import annotations

from workflows import activity, job, workflow

attempts: dict[str, int] = {}


def _attempt(key: str) -> int:
    attempts[key] = attempts.get(key, 0) + 1
    return attempts[key]


@activity(queue="traced")
async def lookup(x: int) -> int:
    return x * 10


@activity(queue="traced", retries=2)
async def flaky(key: str) -> str:
    if _attempt(key) == 1:
        raise ConnectionError(f"{key}: transient")
    return f"{key} ok"


@workflow(queue="traced")
async def child_flow(x: int) -> int:
    return await lookup.run(x) + 1


@workflow(queue="traced")
async def traced_order(x: int) -> dict[str, object]:
    found = await lookup.run(x)
    note = await flaky.run(f"order-{x}")
    sub = await child_flow.run(x + 1)
    return {"found": found, "note": note, "child": sub}


@job(queue="traced", retries=2)
def flaky_job(key: str) -> str:
    if _attempt(key) == 1:
        raise ValueError(f"{key}: first attempt fails")
    return key
