"""What the leader test runs inside real worker processes: a workflow that waits on a timer."""

from __future__ import annotations

from tests.chaos.chaos_app import QUEUE
from workflows import sleep, workflow


@workflow(queue=QUEUE, timeout=900)
async def nap(seconds: float) -> str:
    # Only the fleet's leader fires due timers: this one wakes only if a leader runs.
    await sleep(seconds)
    return "woke"
