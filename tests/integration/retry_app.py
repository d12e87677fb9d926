"""Jobs and workflows the retry tests run (module-level, so workers import them by path).

Their side effects are lines in a file (``RETRY_APP_DIR``/ran.log), counted exactly by the
tests; a failure is switched on and off by a file (``fail-<key>``), so a test can fix what
failed before it retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from workflows import activity, job, wait_for_signal, workflow

JOBS = "retry-jobs"
FLOWS = "retry-flows"


def _dir() -> Path:
    return Path(os.environ["RETRY_APP_DIR"])


def mark(what: str) -> None:
    with (_dir() / "ran.log").open("a", encoding="utf-8") as log:
        log.write(what + "\n")


def ran(what: str) -> int:
    """How many times ``what`` ran."""
    path = _dir() / "ran.log"
    if not path.exists():
        return 0
    return path.read_text(encoding="utf-8").splitlines().count(what)


def set_failing(key: str, failing: bool) -> None:
    path = _dir() / f"fail-{key}"
    if failing:
        path.touch()
    else:
        path.unlink(missing_ok=True)


def _check(key: str) -> None:
    if (_dir() / f"fail-{key}").exists():
        raise RuntimeError(f"{key} is switched to fail")


@job(queue=JOBS, retries=1)
async def fragile(key: str) -> str:
    mark(f"fragile:{key}")
    _check(key)
    return f"done {key}"


@job(queue=JOBS, retries=0, concurrency_key="shared")
async def keyed(key: str) -> str:
    """Holds the key's one slot until ``go-<key>`` exists (or fails while switched to)."""
    mark(f"keyed:{key}")
    _check(key)
    while not (_dir() / f"go-{key}").exists():
        await asyncio.sleep(0.02)
    return key


@activity(retries=0)
async def step_one(key: str) -> int:
    mark(f"one:{key}")
    return 1


@activity(retries=0)
async def step_two(key: str) -> int:
    mark(f"two:{key}")
    _check(key)
    return 2


@activity(retries=0)
async def step_three(key: str) -> int:
    mark(f"three:{key}")
    return 3


@workflow(queue=FLOWS)
async def three_steps(key: str) -> int:
    first = await step_one.run(key)
    second = await step_two.run(key)
    third = await step_three.run(key)
    return first + second + third


@workflow(queue=FLOWS)
async def child_fails(key: str) -> int:
    """A child workflow (three_steps) that fails on its second step fails this one."""
    first = await step_one.run(f"parent-{key}")
    return first + await three_steps.run(key)


@workflow(queue=FLOWS)
async def waits_for_go(key: str, timeout: float | None = None) -> dict[str, object]:
    """step one, a signal (a timeout, if given, not caught), step three."""
    first = await step_one.run(key)
    payload = await wait_for_signal("go", timeout=timeout)
    third = await step_three.run(key)
    return {"sum": first + third, "payload": payload}


@workflow(queue=FLOWS)
async def survives_a_failure(key: str) -> str:
    """Catches its first step's failure and goes on, then fails on the last step."""
    # Survived: a retry does not run this step again.
    with contextlib.suppress(Exception):
        await step_two.run(f"caught-{key}")
    await step_one.run(key)
    await step_two.run(key)
    return "ok"


@activity(retries=0)
async def gate(key: str) -> str:
    """Runs until ``go-<key>`` exists."""
    mark(f"gate:{key}")
    while not (_dir() / f"go-{key}").exists():
        await asyncio.sleep(0.02)
    return key


@workflow(queue=FLOWS)
async def gated(key: str) -> str:
    return await gate.run(key)
