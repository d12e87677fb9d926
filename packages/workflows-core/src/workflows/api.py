"""Decorators and handles (``@job``, ``@activity``, ``@workflow``) and calls from workflow code."""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from workflows import codec
from workflows.config import Settings
from workflows.errors import ConfigurationError, WorkflowsError
from workflows.history import ScheduleActivity, StartChild, StartTimer, StepOptions, WaitSignal
from workflows.replay import WorkflowInstance, current_instance
from workflows.store import EnqueueRequest, async_store, sync_store

P = ParamSpec("P")
R = TypeVar("R")
Kind = Literal["job", "activity", "workflow"]

_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_PRIORITY_RANGE = (-(2**31), 2**31 - 1)

# Every decorated function by import path, so a worker can check what it finds.
REGISTRY: dict[str, Function[..., Any]] = {}


def validate_queue(queue: str) -> str:
    if not isinstance(queue, str) or not _QUEUE.match(queue):
        raise ConfigurationError(
            f"invalid queue name {queue!r}: use 1-128 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return queue


def _function_path(fn: Callable[..., Any]) -> str:
    module = fn.__module__
    if module == "__main__":
        # A script run as `python app.py`: the worker imports it as `app` from the same folder.
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif getattr(main, "__file__", None):
            module = Path(main.__file__).stem  # type: ignore[arg-type]
    qualname = fn.__qualname__
    if "<locals>" in qualname:
        raise ConfigurationError(
            f"{qualname}: decorate module-level functions only (a worker must import it by name)"
        )
    return f"{module}:{qualname}"


def _check_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value!r}")


@dataclass(frozen=True)
class CallOptions:
    queue: str | None = None
    priority: int | None = None
    timeout: float | None = None
    retries: int | None = None
    delay: float | None = None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    conn: Any = None

    def validated(self) -> CallOptions:
        if self.queue is not None:
            validate_queue(self.queue)
        _check_number("priority", self.priority, minimum=_PRIORITY_RANGE[0], integer=True)
        if self.priority is not None and self.priority > _PRIORITY_RANGE[1]:
            raise ConfigurationError(f"priority must fit in 32 bits, got {self.priority}")
        _check_number("timeout", self.timeout, minimum=0.001)
        _check_number("retries", self.retries, minimum=0, integer=True)
        _check_number("delay", self.delay, minimum=0)
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime) or self.run_at.tzinfo is None:
                raise ConfigurationError("run_at must be a timezone-aware datetime")
            if self.delay is not None:
                raise ConfigurationError("give delay or run_at, not both")
        if self.idempotency_key is not None and (
            not isinstance(self.idempotency_key, str) or not self.idempotency_key
        ):
            raise ConfigurationError("idempotency_key must be a non-empty string")
        return self


class Function(Generic[P, R]):
    """A decorated function: call it directly as usual, or run it durably."""

    kind: Kind

    def __init__(
        self,
        fn: Callable[P, Any],
        *,
        queue: str | None,
        retries: int | None,
        timeout: float | None,
        priority: int,
        version: int | None = None,
    ) -> None:
        if queue is not None:
            validate_queue(queue)
        _check_number("retries", retries, minimum=0, integer=True)
        _check_number("timeout", timeout, minimum=0.001)
        _check_number("priority", priority, minimum=_PRIORITY_RANGE[0], integer=True)
        self.fn = fn
        self.path = _function_path(fn)
        self.queue_name = queue
        self.retries = retries
        self.timeout = timeout
        self.priority = priority
        self.version = version
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", self.path)
        self.__qualname__ = getattr(fn, "__qualname__", self.path)
        self.__doc__ = fn.__doc__
        REGISTRY[self.path] = self

    def __repr__(self) -> str:
        return f"<{self.kind} {self.path}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        conn: Any = None,
    ) -> Handle[P, R]:
        opts = CallOptions(queue, priority, timeout, retries, delay, run_at, idempotency_key, conn)
        return Handle(self, opts.validated())

    async def queue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue a run; returns the execution id."""
        return await Handle(self, CallOptions()).queue(*args, **kwargs)

    def queue_sync(self, *args: P.args, **kwargs: P.kwargs) -> str:
        return Handle(self, CallOptions()).queue_sync(*args, **kwargs)

    async def queue_many(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[str]:
        """Enqueue many runs in one round trip: ``[(args, kwargs), ...]``; returns their ids."""
        return await Handle(self, CallOptions()).queue_many(calls)

    def resolved_queue(self, settings: Settings) -> str:
        return self.queue_name or "default"

    def request(
        self,
        opts: CallOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        settings: Settings,
    ) -> EnqueueRequest:
        payload = codec.encode_call(args, kwargs, max_bytes=settings.max_payload_bytes)
        is_workflow = self.kind == "workflow"
        retries = opts.retries if opts.retries is not None else self.retries
        if retries is None:
            retries = 0 if is_workflow else settings.default_retries
        timeout = opts.timeout if opts.timeout is not None else self.timeout
        if timeout is None:
            timeout = settings.default_workflow_timeout if is_workflow else settings.default_timeout
        return EnqueueRequest(
            kind=self.kind,
            name=self.path,
            queue=opts.queue or self.resolved_queue(settings),
            args=payload,
            priority=opts.priority if opts.priority is not None else self.priority,
            max_retries=0 if is_workflow else retries,
            timeout=None if is_workflow else timeout,
            run_at=opts.run_at,
            delay=opts.delay,
            idempotency_key=opts.idempotency_key,
            version=self.version if is_workflow else None,
            workflow_timeout=timeout if is_workflow else None,
        )


class Handle(Generic[P, R]):
    """A function with per-call options; ``.queue()`` like the function's own."""

    def __init__(self, function: Function[P, R], opts: CallOptions) -> None:
        self.function = function
        self.opts = opts

    def options(self, **changes: Any) -> Handle[P, R]:
        return Handle(self.function, replace(self.opts, **changes).validated())

    async def queue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        settings = Settings.current()
        request = self.function.request(self.opts, args, kwargs, settings)
        conn = self.opts.conn
        if conn is not None and type(conn).__module__.startswith("psycopg"):
            raise ConfigurationError("a psycopg connection goes with .queue_sync(), not .queue()")
        return await async_store(settings).enqueue(request, conn)

    def queue_sync(self, *args: P.args, **kwargs: P.kwargs) -> str:
        settings = Settings.current()
        request = self.function.request(self.opts, args, kwargs, settings)
        conn = self.opts.conn
        if conn is not None and type(conn).__module__.startswith("asyncpg"):
            raise ConfigurationError(
                "an asyncpg connection goes with await .queue(), not .queue_sync()"
            )
        return sync_store(settings).enqueue(request, conn)

    async def queue_many(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[str]:
        if self.opts.conn is not None or self.opts.idempotency_key is not None:
            raise ConfigurationError("queue_many takes no conn or idempotency_key option")
        settings = Settings.current()
        if not calls:
            return []
        # The options resolve the same for every call: once, then only the arguments differ.
        (args, kwargs), rest = calls[0], calls[1:]
        first = self.function.request(self.opts, tuple(args), dict(kwargs), settings)
        limit = settings.max_payload_bytes
        payloads = [first.args]
        payloads.extend(
            codec.encode_call(tuple(args), dict(kwargs), max_bytes=limit) for args, kwargs in rest
        )
        return await async_store(settings).enqueue_many(first, payloads)

    def run(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Inside a workflow: run as a durable step with these options."""
        return _schedule_step(self.function, self.opts, args, kwargs)


def _step_options(function: Function[Any, Any], opts: CallOptions) -> StepOptions:
    if opts.delay is not None or opts.run_at is not None or opts.idempotency_key is not None:
        raise ConfigurationError("delay, run_at and idempotency_key do not apply to workflow steps")
    return StepOptions(
        queue=opts.queue or function.queue_name,
        timeout=opts.timeout if opts.timeout is not None else function.timeout,
        retries=opts.retries if opts.retries is not None else function.retries,
        priority=opts.priority if opts.priority is not None else function.priority,
        version=function.version,
    )


def _max_payload_bytes() -> int:
    return Settings.current().max_payload_bytes


def _require_instance(what: str) -> WorkflowInstance:
    instance = current_instance()
    if instance is None:
        raise WorkflowsError(f"{what} can only be used inside a @workflow function")
    return instance


def _schedule_step(
    function: Function[Any, Any],
    opts: CallOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> asyncio.Future[Any]:
    instance = _require_instance(f"{function.path}.run()")
    options = _step_options(function, opts)
    # Encode now so a bad or oversized argument raises at the call, where the workflow can
    # catch it, not later in the worker.
    limit = instance.max_payload_bytes
    encoded = codec.encode_call(
        args, kwargs, max_bytes=_max_payload_bytes() if limit is None else limit
    )
    if function.kind == "workflow":
        return instance.step(
            StartChild(-1, function.path, args, kwargs, options, encoded_args=encoded)
        )
    if function.kind == "activity":
        return instance.step(
            ScheduleActivity(-1, function.path, args, kwargs, options, encoded_args=encoded)
        )
    raise WorkflowsError(
        f"{function.path} is a @job; inside a workflow run @activity functions or child workflows"
    )


class JobFunction(Function[P, R]):
    kind: Kind = "job"


class ActivityFunction(Function[P, R]):
    kind: Kind = "activity"

    def run(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Inside a workflow: schedule this activity and wait for its recorded result."""
        return _schedule_step(self, CallOptions(), args, kwargs)

    async def queue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        raise WorkflowsError(
            f"{self.path} is an @activity: call `await {self.__name__}.run(...)` inside a workflow"
        )

    def queue_sync(self, *args: P.args, **kwargs: P.kwargs) -> str:
        raise WorkflowsError(f"{self.path} is an @activity: run it from a workflow")


class WorkflowFunction(Function[P, R]):
    kind: Kind = "workflow"

    def run(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Inside a workflow: start this workflow as a child and wait for its result."""
        return _schedule_step(self, CallOptions(), args, kwargs)


def _decorate(
    cls: type[Function[Any, Any]],
    fn: Callable[..., Any] | None,
    **settings: Any,
) -> Any:
    def wrap(f: Callable[..., Any]) -> Function[Any, Any]:
        if not callable(f):
            raise ConfigurationError(f"@{cls.kind} decorates functions, got {f!r}")
        if cls.kind == "workflow" and not inspect.iscoroutinefunction(f):
            raise ConfigurationError(f"@workflow {f.__qualname__} must be an `async def` function")
        return cls(f, **settings)

    return wrap(fn) if fn is not None else wrap


@overload
def job(fn: Callable[P, R], /) -> JobFunction[P, R]: ...
@overload
def job(
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...
def job(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
) -> Any:
    """A background job: ``await f.queue(...)`` runs it on a worker serving its queue."""
    return _decorate(
        JobFunction, fn, queue=queue, retries=retries, timeout=timeout, priority=priority
    )


@overload
def activity(fn: Callable[P, R], /) -> ActivityFunction[P, R]: ...
@overload
def activity(
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
) -> Callable[[Callable[P, R]], ActivityFunction[P, R]]: ...
def activity(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
) -> Any:
    """A durable workflow step: ``await f.run(...)`` in a workflow; never re-run once recorded."""
    return _decorate(
        ActivityFunction, fn, queue=queue, retries=retries, timeout=timeout, priority=priority
    )


@overload
def workflow(fn: Callable[P, R], /) -> WorkflowFunction[P, R]: ...
@overload
def workflow(
    *,
    queue: str | None = None,
    version: int = 1,
    timeout: float | None = None,
    priority: int = 0,
) -> Callable[[Callable[P, R]], WorkflowFunction[P, R]]: ...
def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    queue: str | None = None,
    version: int = 1,
    timeout: float | None = None,
    priority: int = 0,
) -> Any:
    """A durable workflow: deterministic code whose steps are recorded and replayed."""
    _check_number("version", version, minimum=1, integer=True)
    return _decorate(
        WorkflowFunction,
        fn,
        queue=queue,
        retries=None,
        timeout=timeout,
        priority=priority,
        version=version,
    )


# ---- calls made from workflow code ---------------------------------------------------------


async def wait_for_signal(name: str, timeout: float | None = None) -> Any:
    """Wait (durably) for the next signal called ``name``; its payload.

    Raises :class:`workflows.SignalTimeoutError` (a ``TimeoutError``) after ``timeout`` seconds.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError("signal name must be a non-empty string")
    _check_number("timeout", timeout, minimum=0)
    instance = _require_instance("wait_for_signal()")
    return await instance.step(WaitSignal(-1, name, timeout))


async def sleep(seconds: float) -> None:
    """A durable timer: survives worker restarts and holds no worker slot while it waits."""
    _check_number("seconds", seconds, minimum=0)
    instance = _require_instance("workflows.sleep()")
    await instance.step(StartTimer(-1, float(seconds)))


def get_version(change_id: str, min_supported: int, max_supported: int) -> int:
    """Which side of a code change this execution takes (see README: Versioning)."""
    if not isinstance(change_id, str) or not change_id:
        raise ConfigurationError("change_id must be a non-empty string")
    instance = _require_instance("get_version()")
    return instance.version(change_id, min_supported, max_supported)


# ---- calls made from anywhere --------------------------------------------------------------


def _check_signal_args(name: str, payload: Any, settings: Settings) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError("signal name must be a non-empty string")
    return codec.encode(payload, what="signal payload", max_bytes=settings.max_payload_bytes)


async def send_signal(workflow_id: str, name: str, payload: Any = None) -> None:
    """Store a signal for a workflow durably and wake it."""
    text = _check_signal_args(name, payload, Settings.current())
    await async_store().send_signal(str(workflow_id), name, text)


def send_signal_sync(workflow_id: str, name: str, payload: Any = None) -> None:
    text = _check_signal_args(name, payload, Settings.current())
    sync_store().send_signal(str(workflow_id), name, text)


async def get_status(execution_id: str) -> dict[str, Any]:
    """The same fields as ``workflows status ID --json``."""
    return await async_store().get_status(str(execution_id))


def get_status_sync(execution_id: str) -> dict[str, Any]:
    return sync_store().get_status(str(execution_id))


def _result_of(status: dict[str, Any]) -> Any:
    from workflows.errors import ExecutionCancelledError, ExecutionFailedError

    if status["status"] == "completed":
        return status["result"]
    if status["status"] == "cancelled":
        raise ExecutionCancelledError(f"execution {status['id']} was cancelled")
    raise ExecutionFailedError(status["id"], status["error"])


async def get_result(execution_id: str, timeout: float | None = None) -> Any:
    """Wait for an execution to finish; its result, or its recorded error raised.

    Raises ``TimeoutError`` if it has not finished within ``timeout`` seconds.
    """
    status = await async_store().wait_finished(str(execution_id), timeout)
    return _result_of(status)


def get_result_sync(execution_id: str, timeout: float | None = None) -> Any:
    return _result_of(sync_store().wait_finished(str(execution_id), timeout))


async def cancel(execution_id: str) -> str:
    """Cancel an execution (and what a workflow started).

    Returns ``cancelled`` (done), ``cancelling`` (its worker is told to stop it) or
    ``already <status>`` when it had finished.
    """
    return await async_store().cancel(str(execution_id))
