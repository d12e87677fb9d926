"""The test environment for synchronous tests: the same environment, its event loop (and the
worker in it) on a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, overload

from currant.testing.environment import Environment
from workflows.api import Function
from workflows.ids import ExecutionId, ResultTypeMismatch

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class SyncEnvironment:
    """:class:`Environment` for plain ``def`` tests: ``env.run(fn, *args)`` blocks until the
    execution ends. The code under test uses the ``_sync`` API (``fn.queue_sync``...)."""

    __test__ = False

    def __init__(self, queues: Iterable[str] | None = None, **options: Any) -> None:
        self._env = Environment(queues, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="workflows-test-env", daemon=True
        )

    def __enter__(self) -> SyncEnvironment:
        self._thread.start()
        try:
            self._call(self._env.start())
        except BaseException:
            self._shut()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._env.stop())
        finally:
            self._shut()

    def _shut(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def schema(self) -> str:
        return self._env.schema

    @property
    def database_url(self) -> str:
        return self._env.database_url

    def run(self, fn: Function[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._call(self._env.run(fn, *args, **kwargs))

    @overload
    def result(self, execution_id: ExecutionId[R], *, timeout: float | None = None) -> R: ...
    @overload
    def result(
        self, execution_id: ExecutionId[Any], *, timeout: float | None = None
    ) -> ResultTypeMismatch: ...
    @overload
    def result(self, execution_id: str, *, timeout: float | None = None) -> Any: ...
    def result(self, execution_id: str, *, timeout: float | None = None) -> Any:
        return self._call(self._env.result(execution_id, timeout=timeout))

    def now(self) -> datetime:
        return self._call(self._env.now())

    def advance(self, seconds: float) -> datetime:
        return self._call(self._env.advance(seconds))

    def enqueued(
        self, fn: Function[..., Any] | str | None = None, *, queue: str | None = None
    ) -> list[dict[str, Any]]:
        return self._call(self._env.enqueued(fn, queue=queue))

    def assert_enqueued(
        self,
        fn: Function[..., Any] | str,
        *,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        count: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._call(
            self._env.assert_enqueued(fn, args=args, kwargs=kwargs, queue=queue, count=count)
        )

    def history(self, execution_id: str) -> dict[str, Any]:
        return self._call(self._env.history(execution_id))
