"""What keeps a worker honest while its event loop is busy: loop lag (and, in heartbeat, beats).

A job that blocks the event loop (``time.sleep`` in an ``async def``, a CPU-bound loop) stops
every other execution of the worker, and its timeout cannot fire until the loop is free. If
the heartbeat ran on the loop too, a peer would declare the worker dead after the heartbeat
timeout and run its work again while it still runs here, then again elsewhere: one blocking
job ran three times. So the heartbeat beats from a thread of its own, on a connection of its
own, and a second thread watches the loop: past ``BLOCKED_AFTER`` seconds late it logs the
function found running on the loop, counts it in a metric and makes ``/healthz`` fail.

The trade-off: a loop blocked for good (an endless loop in async code) would keep the worker's
executions claimed forever. The heartbeat therefore stops once the loop has been blocked for
``heartbeat.STOP_BEATING_AFTER`` heartbeat timeouts, and the worker's peers recover its work as they
would a dead worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from workflows.api import REGISTRY
from workflows_worker.logs import get_logger

log = get_logger(__name__)

# How late the loop may be before it counts as blocked (a busy loop on two cores is a few
# tens of milliseconds late; a blocked one, seconds).
BLOCKED_AFTER = 1.0
_TICK = 0.1


class LoopWatch:
    """Measures how late the event loop is, from a thread that does not need the loop."""

    def __init__(
        self,
        on_block: Callable[[str, float], None] | None = None,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._seen = time.monotonic()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_block = on_block
        self._on_lag = on_lag
        self._reported = False

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._seen = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="workflows-tick")
        # In a copy of the starting context: its records name the worker (workflows_worker.logs).
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._watch,),
            name="workflows-loop-watch",
            daemon=True,
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def blocked_for(self) -> float:
        """Seconds since the loop last ran its tick, less the tick itself (0 when on time)."""
        return max(time.monotonic() - self._seen - _TICK, 0.0)

    @property
    def blocked(self) -> bool:
        return self.blocked_for > BLOCKED_AFTER

    async def _tick(self) -> None:
        while True:
            self._seen = time.monotonic()
            await asyncio.sleep(_TICK)

    def _watch(self) -> None:
        while not self._stop.wait(_TICK):
            late = self.blocked_for
            if self._on_lag is not None:
                self._on_lag(late)
            if late > BLOCKED_AFTER and not self._reported:
                self._reported = True
                name, where = self.culprit()
                log.warning(
                    "event loop blocked for %.1f s by %s (%s): an async function is running "
                    "blocking code; nothing else runs on this worker until it returns",
                    late,
                    name,
                    where,
                )
                if self._on_block is not None:
                    self._on_block(name, late)
            elif late <= BLOCKED_AFTER:
                self._reported = False

    def culprit(self) -> tuple[str, str]:
        """The decorated function running on the loop now, and the line it is at."""
        if self._loop_thread is None:
            return "unknown", "?"
        frame: types.FrameType | None = sys._current_frames().get(self._loop_thread)
        codes = {fn.fn.__code__: path for path, fn in list(REGISTRY.items()) if _has_code(fn.fn)}
        innermost = frame
        while frame is not None:
            path = codes.get(frame.f_code)
            if path is not None:
                return path, _where(innermost)
            frame = frame.f_back
        return "unknown", _where(innermost)


def _has_code(fn: Any) -> bool:
    return hasattr(fn, "__code__")


def _where(frame: types.FrameType | None) -> str:
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
