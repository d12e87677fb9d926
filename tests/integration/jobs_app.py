"""Jobs the integration tests run; module-level so a worker can import them by path."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from workflows import job

# What ran, in order, in this process (in-process workers share it with the test).
calls: list[tuple[str, Any]] = []
attempts: dict[str, int] = {}
started = asyncio.Event()
gate: dict[str, asyncio.Event] = {}
# The gates whose job's code began, in order.
entered: list[str] = []


@job(queue="emails", retries=3)
async def send_email(to: str, subject: str, body: str) -> dict[str, bool]:
    calls.append(("send_email", to))
    return {"sent": True}


@job(queue="work", retries=3)
async def flaky(key: str, failures: int) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= failures:
        raise RuntimeError(f"failure {attempts[key]} of {key}")
    return f"ok after {attempts[key]}"


@job(queue="work", retries=1)
async def always_fails(key: str) -> None:
    attempts[key] = attempts.get(key, 0) + 1
    raise ValueError(f"boom {key}")


@job(queue="work", retries=0, timeout=0.2)
async def too_slow() -> None:
    await asyncio.sleep(30)


@job(queue="work", retries=0)
async def record(tag: str) -> str:
    calls.append(("record", tag))
    return tag


@job(queue="work", retries=0)
def sync_sleep(seconds: float) -> int:
    # A plain function: runs in a thread, the event loop stays free.
    time.sleep(seconds)
    return threading.get_ident()


@job(queue="work", retries=0)
async def bad_result() -> object:
    return object()


@job(queue="work", retries=0)
async def wait_for_gate(name: str) -> str:
    entered.append(name)
    started.set()
    event = gate.setdefault(name, asyncio.Event())
    await event.wait()
    return name


@job(queue="work", retries=0)
async def sleeper(seconds: float) -> float:
    started.set()
    await asyncio.sleep(seconds)
    return seconds


concurrent_now = 0
concurrent_max = 0


@job(queue="work", retries=0)
async def count_concurrency(seconds: float) -> None:
    global concurrent_now, concurrent_max
    concurrent_now += 1
    concurrent_max = max(concurrent_max, concurrent_now)
    await asyncio.sleep(seconds)
    concurrent_now -= 1


def plain_function() -> None:
    """Not decorated: a worker must refuse to run it."""


def reset() -> None:
    global concurrent_now, concurrent_max, started
    calls.clear()
    attempts.clear()
    gate.clear()
    entered.clear()
    started = asyncio.Event()
    concurrent_now = concurrent_max = 0
