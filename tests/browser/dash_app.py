"""What the browser tests run on a real worker: a job that fails until told not to, an echo
job, and a workflow with activities (one failing once), a child, a timer, a version marker and
a signal wait."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from workflows import activity, get_version, job, sleep, wait_for_signal, workflow

QUEUE = "dash"


def _flag(name: str) -> Path:
    return Path(os.environ["DASH_FLAGS"]) / name


@job(queue=QUEUE, retries=0)
def flaky(tag: str) -> str:
    """Fails until the test creates the flag file named ``tag``."""
    if not _flag(tag).exists():
        raise ValueError(f"{tag}: the flag is not set yet")
    return f"{tag}: fixed"


@job(queue=QUEUE)
def echo(value: Any) -> Any:
    return value


@job(queue=QUEUE)
def hold(tag: str) -> str:
    """Runs until the test creates the flag ``release-<tag>`` (a minute at most)."""
    end = time.monotonic() + 60
    while not _flag(f"release-{tag}").exists() and time.monotonic() < end:
        time.sleep(0.02)
    return tag


@activity(retries=2)
async def reserve(order: str) -> str:
    # Fails its first attempt: the timeline marks the failed attempt.
    marker = _flag(f"reserve-{order}")
    if not marker.exists():
        marker.touch()
        raise RuntimeError("stock service timed out")
    return f"reserved {order}"


@activity()
async def charge(order: str) -> dict[str, str]:
    return {"transaction_id": f"tx-{order}"}


@workflow(queue=QUEUE)
async def notify(order: str) -> str:
    await charge.run(f"{order}-notice")
    return f"notified {order}"


@workflow(queue=QUEUE)
async def approval(order: str) -> dict[str, Any]:
    reserved = await reserve.run(order)
    charged = await charge.run(order)
    if get_version("notify_customer", 1, 2) >= 2:
        await notify.run(order)
    await sleep(0.2)
    decision = await wait_for_signal("approved", timeout=600)
    return {"order": order, "reserved": reserved, "charge": charged, "decision": decision}


# Bars on approval's timeline: reserve, charge, the child notify, the timer, the signal wait
# (the version marker is a marker, not a bar).
APPROVAL_BARS = 5
