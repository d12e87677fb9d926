"""The threads that run plain ``def`` jobs and activities: the worker's own, bounded, watched.

asyncio's default executor is shared, sized to the machine (six threads on two cores) and
joined at exit: a few calls that never return (a hung socket read) silently take every thread,
after which every later call "times out" queued without running, and the process cannot exit.
Here each worker has as many daemon threads as executions at once; a call whose caller gave up
(timed out or cancelled) while it runs counts as *stuck* until it returns, the worker claims
that many fewer executions, and a pool whose every thread is stuck reports itself exhausted.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["PoolExhaustedError", "SyncPool"]


class PoolExhaustedError(RuntimeError):
    """No thread is free: every one is running a call (some perhaps stuck past a timeout)."""


class _Call:
    __slots__ = ("abandoned", "args", "context", "fn", "future", "kwargs", "loop", "started")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.loop = loop
        self.future = future
        self.context = contextvars.copy_context()
        self.started = False
        self.abandoned = False


class SyncPool:
    """At most ``size`` plain functions at once, each on a daemon thread of this pool."""

    def __init__(self, size: int, name: str = "workflows-sync") -> None:
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = size
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._stuck = 0
        self._closed = False

    @property
    def stuck(self) -> int:
        """Calls still running whose caller stopped waiting (timed out, cancelled)."""
        return self._stuck

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def exhausted(self) -> bool:
        return self._stuck >= self.size

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on a thread of the pool; raises :class:`PoolExhaustedError`
        at once rather than queue behind calls that may never return."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = _Call(fn, args, kwargs, loop, future)
        with self._lock:
            if self._closed:
                raise PoolExhaustedError("the worker is stopping")
            if self._busy >= self.size:
                raise PoolExhaustedError(
                    f"all {self.size} threads are busy ({self._stuck} stuck in calls that ran "
                    "past their timeout)"
                )
            self._busy += 1
            if len(self._threads) < self._busy:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._queue.put(call)
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:
                call.abandoned = True
                if call.started:
                    # Python cannot stop a thread: it stays taken until the call returns.
                    self._stuck += 1
            raise

    def close(self) -> None:
        """Let idle threads end; stuck ones are daemons and do not hold the process."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._queue.put(None)

    def _serve(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            with self._lock:
                skip = call.abandoned
                call.started = not skip
            result: Any = None
            error: BaseException | None = None
            if not skip:
                try:
                    result = call.context.run(call.fn, *call.args, **call.kwargs)
                except StopIteration as exc:
                    # A future refuses StopIteration; it would never be settled.
                    error = RuntimeError(f"{type(exc).__name__} raised: {exc!r}")
                except BaseException as exc:  # delivered to the caller, whatever it is
                    error = exc
            with self._lock:
                self._busy -= 1
                if call.abandoned and not skip:
                    self._stuck -= 1
            if not call.abandoned:
                try:
                    call.loop.call_soon_threadsafe(_settle, call.future, result, error)
                except RuntimeError:
                    return  # the loop is closed: the worker is gone


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
