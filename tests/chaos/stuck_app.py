"""Jobs that never return, or block their worker's event loop, for tests/chaos/test_stuck.py.

Each one notes its start as a line ``<function> <key> <pid>`` appended to the file named by
``STUCK_RUNS_FILE`` before it does anything else, so a test counts how often (and in which
worker process) the code really ran, whatever the database says about attempts.
"""

from __future__ import annotations

import os
import threading
import time

from tests.chaos.chaos_app import QUEUE
from workflows import job

RUNS_FILE_ENV = "STUCK_RUNS_FILE"
HANG_TIMEOUT = 1.0
BLOCK_TIMEOUT = 1.0

# Never set: a call waiting on it holds its thread for good, like a read on a dead socket.
_NEVER = threading.Event()


def note_start(function: str, key: str) -> None:
    # One short O_APPEND write per line: lines from several processes do not interleave.
    with open(os.environ[RUNS_FILE_ENV], "a", encoding="utf-8") as runs:
        runs.write(f"{function} {key} {os.getpid()}\n")


@job(queue=QUEUE, retries=0, timeout=HANG_TIMEOUT)
def hang(key: str) -> None:
    note_start("hang", key)
    _NEVER.wait()


@job(queue=QUEUE, retries=0, timeout=10)
def quick(key: str) -> dict[str, object]:
    note_start("quick", key)
    return {"key": key, "pid": os.getpid()}


@job(queue=QUEUE, retries=2, timeout=BLOCK_TIMEOUT)
async def block_loop(key: str, seconds: float) -> dict[str, object]:
    """Blocking code in an ``async def``: its worker's event loop runs nothing until it returns,
    so its timeout cannot fire before then either."""
    note_start("block_loop", key)
    time.sleep(seconds)  # the blocking call under test, on purpose
    return {"key": key, "pid": os.getpid()}
