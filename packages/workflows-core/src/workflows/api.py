"""Decorators and handles (``@job``, ``@activity``, ``@workflow``) and calls from workflow code."""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import sys
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, cast, overload

from workflows import codec, tracing
from workflows.config import Settings
from workflows.determinism import check_workflow
from workflows.durations import to_seconds
from workflows.errors import ConfigurationError, SerializationError, WorkflowsError
from workflows.errors import preview as _preview
from workflows.flow import KeyOption, check_key, check_key_option, check_limit, resolve_key
from workflows.history import ScheduleActivity, StartChild, StartTimer, StepOptions, WaitSignal
from workflows.ids import ExecutionId, ResultTypeMismatch
from workflows.replay import WorkflowInstance, current_instance
from workflows.schedules import Schedule
from workflows.store import EnqueueRequest, async_store, sync_store

if typing.TYPE_CHECKING:
    from workflows.client import Client

P = ParamSpec("P")
# A decorated function's result as the caller gets it: what `await act.run()` and
# `get_result(id)` give back. The decorators bind it to T of an `async def` returning T (its
# call returns an Awaitable[T], which the worker awaits) and to T of a plain `def`.
R = TypeVar("R")
Kind = Literal["job", "activity", "workflow"]

_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_PRIORITY_RANGE = (-(2**31), 2**31 - 1)
# Timeouts, delays, timers: PostgreSQL adds them to now() (an interval, a timestamptz) and
# asyncio schedules them, so a finite bound far past any real use keeps both in range.
MAX_SECONDS = 10 * 365.25 * 86400  # 10 years
# Retries fit the integer columns with room for the attempt counter (retries + 1).
MAX_RETRIES = 1_000_000
# A btree index entry holds about 2.7 kB; the key's unique index must never refuse one.
MAX_IDEMPOTENCY_KEY_BYTES = 1000
MAX_NAME_CHARS = 255
# asyncpg sends these two instants (in UTC) as -infinity and infinity, not as the dates.
_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)

# Every decorated function by import path, so a worker can check what it finds.
REGISTRY: dict[str, Function[..., Any]] = {}


def validate_queue(queue: str) -> str:
    # fullmatch: `$` would let a trailing newline through.
    if not isinstance(queue, str) or not _QUEUE.fullmatch(queue):
        raise ConfigurationError(
            f"invalid queue name {_preview(queue)}: use 1-128 letters, digits, '_', '.', ':' "
            "or '-', starting with a letter or digit"
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


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _check_number(
    name: str,
    value: Any,
    *,
    minimum: float,
    maximum: float,
    integer: bool = False,
    unit: str = "",
) -> None:
    if value is None:
        return
    kind = "a whole number" if integer else "a finite number"
    allowed = f"{kind} from {_number(minimum)} to {_number(maximum)}{unit}"
    # NaN compares false with everything: it would pass the bounds without the isfinite.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
        or (isinstance(value, float) and not math.isfinite(value))
        or not minimum <= value <= maximum
    ):
        raise ConfigurationError(f"{name} must be {allowed}, got {_preview(value)}")


def _check_seconds(name: str, value: Any, *, minimum: float = 0) -> None:
    _check_number(name, value, minimum=minimum, maximum=MAX_SECONDS, unit=" seconds (10 years)")


def _check_retries(value: Any) -> None:
    _check_number("retries", value, minimum=0, maximum=MAX_RETRIES, integer=True)


def _check_priority(value: Any) -> None:
    _check_number(
        "priority", value, minimum=_PRIORITY_RANGE[0], maximum=_PRIORITY_RANGE[1], integer=True
    )


def _check_version(value: Any) -> None:
    _check_number("version", value, minimum=1, maximum=_PRIORITY_RANGE[1], integer=True)


def _check_text(name: str, value: Any, *, max_chars: int, max_bytes: int | None = None) -> None:
    """A non-empty str PostgreSQL can store and index: bounded, no NUL, valid UTF-8."""
    if max_bytes is None:
        limit = f"at most {max_chars} characters"
    else:
        limit = f"at most {max_bytes} bytes of UTF-8"
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{name} must be a non-empty string ({limit}), got {_preview(value)}"
        )
    if len(value) > max_chars:
        raise ConfigurationError(
            f"{name} must be {limit}, got {len(value)} characters: {_preview(value)}"
        )
    if "\x00" in value:
        raise ConfigurationError(
            f"{name} must not contain a NUL character (PostgreSQL text refuses it): "
            f"{_preview(value)}"
        )
    if not value.isascii():
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise ConfigurationError(
                f"{name} must be valid Unicode: it contains a lone surrogate: {_preview(value)}"
            ) from None
        if max_bytes is not None and size > max_bytes:
            raise ConfigurationError(f"{name} must be {limit}, got {size} bytes: {_preview(value)}")


def _check_run_at(value: Any) -> None:
    allowed = (
        "a timezone-aware datetime after 0001-01-01 00:00 UTC and before "
        "9999-12-31 23:59:59.999999 UTC"
    )
    if not isinstance(value, datetime):
        raise ConfigurationError(f"run_at must be {allowed}, got {_preview(value)}")
    try:
        if value.utcoffset() is None:
            raise ConfigurationError(f"run_at must be {allowed}, got a naive {_preview(value)}")
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError, TypeError):
        # Near year 1 or 9999 an offset carries the instant outside what datetime holds.
        raise ConfigurationError(f"run_at must be {allowed}, got {_preview(value)}") from None
    if not _FIRST_INSTANT < utc < _LAST_INSTANT:
        raise ConfigurationError(
            f"run_at must be {allowed} (the driver sends those instants as -infinity and "
            f"infinity), got {_preview(value)}"
        )


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
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_key: str | None = None
    # Seconds, once validated (given as text like "1h", seconds or a timedelta).
    idempotency_ttl: Any = None
    # A workflows.Client: enqueue into its database and schema instead of the process's.
    client: Client | None = None

    def validated(self) -> CallOptions:
        if self.client is not None:
            from workflows.client import as_client

            as_client(self.client)
        if self.queue is not None:
            validate_queue(self.queue)
        _check_priority(self.priority)
        _check_seconds("timeout", self.timeout, minimum=0.001)
        _check_retries(self.retries)
        _check_seconds("delay", self.delay)
        if self.run_at is not None:
            _check_run_at(self.run_at)
            if self.delay is not None:
                raise ConfigurationError("give delay or run_at, not both")
        if self.idempotency_key is not None:
            _check_text(
                "idempotency_key",
                self.idempotency_key,
                max_chars=MAX_IDEMPOTENCY_KEY_BYTES,
                max_bytes=MAX_IDEMPOTENCY_KEY_BYTES,
            )
        if self.concurrency_key is not None:
            check_key("concurrency_key", self.concurrency_key)
        if self.concurrency_limit is not None:
            check_limit("concurrency_limit", self.concurrency_limit)
        if self.rate_key is not None:
            check_key("rate_key", self.rate_key)
        if self.idempotency_ttl is not None:
            if self.idempotency_key is None:
                raise ConfigurationError("idempotency_ttl needs an idempotency_key")
            try:
                ttl = to_seconds(self.idempotency_ttl, "idempotency_ttl")
            except ValueError as exc:
                raise ConfigurationError(f"idempotency_ttl: {exc}") from None
            # 0 / "forever": the key holds as long as the row, as without a ttl.
            return replace(self, idempotency_ttl=ttl or None)
        return self


_NO_OPTIONS = CallOptions()


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
        schedule: Schedule | None = None,
        concurrency_key: KeyOption = None,
        concurrency_limit: int | None = None,
        rate_key: KeyOption = None,
    ) -> None:
        if queue is not None:
            validate_queue(queue)
        check_key_option("concurrency_key", concurrency_key)
        if concurrency_limit is not None:
            check_limit("concurrency_limit", concurrency_limit)
        check_key_option("rate_key", rate_key)
        _check_retries(retries)
        _check_seconds("timeout", timeout, minimum=0.001)
        _check_priority(priority)
        _check_version(version)
        self.fn = fn
        self.path = _function_path(fn)
        self.queue_name = queue
        self.retries = retries
        self.timeout = timeout
        self.priority = priority
        self.version = version
        self.schedule = None if schedule is None else schedule.validated()
        self.concurrency_key = concurrency_key
        self.concurrency_limit = concurrency_limit
        self.rate_key = rate_key
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", self.path)
        self.__qualname__ = getattr(fn, "__qualname__", self.path)
        self.__doc__ = fn.__doc__
        # (settings, request) of a call without options: see _plain_request().
        self._plain: tuple[Settings, EnqueueRequest | None] | None = None
        # The options of a step run without options, keys not computed: see _step_options().
        self._plain_step: StepOptions | None = None
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
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        rate_key: str | None = None,
        idempotency_ttl: Any = None,
        client: Client | None = None,
    ) -> Handle[P, R]:
        opts = CallOptions(
            queue,
            priority,
            timeout,
            retries,
            delay,
            run_at,
            idempotency_key,
            conn,
            concurrency_key,
            concurrency_limit,
            rate_key,
            idempotency_ttl,
            client,
        )
        return Handle(self, opts.validated())

    def __setattr__(self, name: str, value: Any) -> None:
        # The plain call's request is made from these attributes: one set later (a test's
        # version, say) makes it again.
        object.__setattr__(self, name, value)
        if not name.startswith("_plain"):
            object.__setattr__(self, "_plain", None)
            object.__setattr__(self, "_plain_step", None)

    def _plain_request(self, settings: Settings) -> tuple[Settings, EnqueueRequest | None]:
        """``(settings, request)``: the request every call without options makes under
        ``settings`` (its ``args`` left to each call), kept in ``_plain``; the request is None
        when calls differ by more than their arguments (keys computed from them, a codec
        named by the settings)."""
        request = None
        if settings.codec is None and not (
            callable(self.concurrency_key) or callable(self.rate_key)
        ):
            request = self.request(_NO_OPTIONS, (), {}, settings)
        plain = self._plain = (settings, request)
        return plain

    def _plain_options(self, settings: Settings) -> EnqueueRequest | None:
        """The request a call without options makes now, or None when such a call must take
        the general path (keys computed from its arguments, a codec, live tracing)."""
        plain = self._plain
        if plain is None or plain[0] is not settings:
            plain = self._plain_request(settings)
        if codec._used is not None or tracing.tracer(settings) is not None:
            return None
        return plain[1]

    async def queue(self, *args: P.args, **kwargs: P.kwargs) -> ExecutionId[R]:
        """Enqueue a run; returns the execution id."""
        settings = Settings.current()
        options = self._plain_options(settings)
        if options is None:
            return await Handle(self, _NO_OPTIONS).queue(*args, **kwargs)
        # What Handle.queue does for a call without options, with what is the same for every
        # such call made once: the producers' hot path.
        payload = codec.encode_call(args, kwargs, max_bytes=settings.max_payload_bytes)
        # The store's plain str: an ExecutionId exists for type checkers only (and cast() is
        # a call).
        return await async_store(settings).enqueue_one(options, payload)  # type: ignore[return-value]

    def queue_sync(self, *args: P.args, **kwargs: P.kwargs) -> ExecutionId[R]:
        settings = Settings.current()
        options = self._plain_options(settings)
        if options is None:
            return Handle(self, _NO_OPTIONS).queue_sync(*args, **kwargs)
        payload = codec.encode_call(args, kwargs, max_bytes=settings.max_payload_bytes)
        return sync_store(settings).enqueue_one(options, payload)  # type: ignore[return-value]

    async def queue_many(
        self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[ExecutionId[R]]:
        """Enqueue many runs in one round trip: ``[(args, kwargs), ...]``; returns their ids."""
        return await Handle(self, CallOptions()).queue_many(calls)

    def resolved_queue(self, settings: Settings) -> str:
        return self.queue_name or "default"

    def flow_keys(
        self, opts: CallOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str | None, int | None, str | None]:
        """The concurrency key, its limit and the rate key of one call (None: not limited)."""
        ckey = opts.concurrency_key
        if ckey is None:
            ckey = resolve_key("concurrency_key", self.concurrency_key, args, kwargs)
        limit = opts.concurrency_limit or self.concurrency_limit
        rkey = opts.rate_key
        if rkey is None:
            rkey = resolve_key("rate_key", self.rate_key, args, kwargs)
        return ckey, (limit or 1) if ckey is not None else None, rkey

    def request(
        self,
        opts: CallOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        settings: Settings,
    ) -> EnqueueRequest:
        if codec._used is None and settings.codec is None:
            # The default codec, without a call more: this is the producers' hot path.
            payload = codec.encode_call(args, kwargs, max_bytes=settings.max_payload_bytes)
        else:
            payload = codec.current(settings).encode_call(
                args, kwargs, max_bytes=settings.max_payload_bytes
            )
        is_workflow = self.kind == "workflow"
        retries = opts.retries if opts.retries is not None else self.retries
        if retries is None:
            retries = 0 if is_workflow else settings.default_retries
        timeout = opts.timeout if opts.timeout is not None else self.timeout
        if timeout is None:
            timeout = settings.default_workflow_timeout if is_workflow else settings.default_timeout
        ckey, climit, rkey = self.flow_keys(opts, args, kwargs)
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
            idempotency_ttl=opts.idempotency_ttl,
            version=self.version if is_workflow else None,
            workflow_timeout=timeout if is_workflow else None,
            concurrency_key=ckey,
            concurrency_limit=climit,
            rate_key=rkey,
        )


class Handle(Generic[P, R]):
    """A function with per-call options; ``.queue()`` like the function's own."""

    def __init__(self, function: Function[P, R], opts: CallOptions) -> None:
        self.function = function
        self.opts = opts

    def options(self, **changes: Any) -> Handle[P, R]:
        return Handle(self.function, replace(self.opts, **changes).validated())

    async def queue(self, *args: P.args, **kwargs: P.kwargs) -> ExecutionId[R]:
        client = self.opts.client
        settings = Settings.current() if client is None else client.settings
        request = self.function.request(self.opts, args, kwargs, settings)
        conn = self.opts.conn
        if conn is not None and type(conn).__module__.startswith("psycopg"):
            raise ConfigurationError("a psycopg connection goes with .queue_sync(), not .queue()")
        store = async_store(settings) if client is None else client.async_store()
        if (tracer := tracing.tracer(settings)) is not None:
            traced = await tracer.queue(request, store.enqueue, conn)
            return cast("ExecutionId[R]", traced)
        # The store's plain str, typed: an ExecutionId exists for type checkers only.
        return cast("ExecutionId[R]", await store.enqueue(request, conn))

    def queue_sync(self, *args: P.args, **kwargs: P.kwargs) -> ExecutionId[R]:
        client = self.opts.client
        settings = Settings.current() if client is None else client.settings
        request = self.function.request(self.opts, args, kwargs, settings)
        conn = self.opts.conn
        if conn is not None and type(conn).__module__.startswith("asyncpg"):
            raise ConfigurationError(
                "an asyncpg connection goes with await .queue(), not .queue_sync()"
            )
        store = sync_store(settings) if client is None else client.sync_store()
        if (tracer := tracing.tracer(settings)) is not None:
            traced = tracer.queue_sync(request, store.enqueue, conn)
            return cast("ExecutionId[R]", traced)
        return cast("ExecutionId[R]", store.enqueue(request, conn))

    async def queue_many(
        self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[ExecutionId[R]]:
        if self.opts.conn is not None or self.opts.idempotency_key is not None:
            raise ConfigurationError("queue_many takes no conn or idempotency_key option")
        client = self.opts.client
        settings = Settings.current() if client is None else client.settings
        if not calls:
            return []
        # Keyword names from a dict, not from `**`: the codec's key check counts on str names.
        if any(not isinstance(k, str) for _, kw in calls for k in kw):
            raise SerializationError("queue_many: keyword argument names must be strings")
        # The options resolve the same for every call: once, then only the arguments differ.
        (args, kwargs), rest = calls[0], calls[1:]
        first = self.function.request(self.opts, tuple(args), dict(kwargs), settings)
        limit = settings.max_payload_bytes
        payloads = [first.args]
        encode_call = codec.current(settings).encode_call
        payloads.extend(
            encode_call(tuple(args), dict(kwargs), max_bytes=limit) for args, kwargs in rest
        )
        fn = self.function
        if callable(fn.concurrency_key) or callable(fn.rate_key):
            # Computed from each call's arguments: one pair per run.
            keys = [fn.flow_keys(self.opts, tuple(a), dict(k)) for a, k in calls]
            first.keys_each = [(ckey, rkey) for ckey, _, rkey in keys]
            first.concurrency_limit = self.opts.concurrency_limit or fn.concurrency_limit or 1
        store = async_store(settings) if client is None else client.async_store()
        if (tracer := tracing.tracer(settings)) is not None:
            ids = await tracer.queue_many(first, payloads, store.enqueue_many)
        else:
            ids = await store.enqueue_many(first, payloads)
        return cast("list[ExecutionId[R]]", ids)

    def run(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Inside a workflow: run as a durable step with these options."""
        return _schedule_step(self.function, self.opts, args, kwargs)


def _step_options(
    function: Function[Any, Any],
    opts: CallOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> StepOptions:
    if opts is _NO_OPTIONS:
        # The same for every step run without options (a workflow's usual step): checked once.
        options = function._plain_step
        if options is not None:
            return options
        if not (callable(function.concurrency_key) or callable(function.rate_key)):
            options = function._plain_step = _checked_step_options(function, opts, args, kwargs)
            return options
    return _checked_step_options(function, opts, args, kwargs)


def _checked_step_options(
    function: Function[Any, Any],
    opts: CallOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> StepOptions:
    if opts.delay is not None or opts.run_at is not None or opts.idempotency_key is not None:
        raise ConfigurationError("delay, run_at and idempotency_key do not apply to workflow steps")
    if opts.client is not None:
        raise ConfigurationError(
            "client does not apply to workflow steps: they run in the workflow's own database"
        )
    ckey, climit, rkey = function.flow_keys(opts, args, kwargs)
    options = StepOptions(
        queue=opts.queue or function.queue_name,
        timeout=opts.timeout if opts.timeout is not None else function.timeout,
        retries=opts.retries if opts.retries is not None else function.retries,
        priority=opts.priority if opts.priority is not None else function.priority,
        version=function.version,
        concurrency_key=ckey,
        concurrency_limit=climit,
        rate_key=rkey,
    )
    # The store writes these as they are: checked again here, where the workflow can catch a
    # bad one, because a Function's attributes and a CallOptions may have been set directly.
    CallOptions(options.queue, options.priority, options.timeout, options.retries).validated()
    _check_version(options.version)
    return options


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
    options = _step_options(function, opts, args, kwargs)
    # Encode now so a bad or oversized argument raises at the call, where the workflow can
    # catch it, not later in the worker.
    limit = instance.max_payload_bytes
    encoded = codec.current().encode_call(
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
        return _schedule_step(self, _NO_OPTIONS, args, kwargs)

    async def queue(self, *args: P.args, **kwargs: P.kwargs) -> ExecutionId[R]:
        raise WorkflowsError(
            f"{self.path} is an @activity: call `await {self.__name__}.run(...)` inside a workflow"
        )

    def queue_sync(self, *args: P.args, **kwargs: P.kwargs) -> ExecutionId[R]:
        raise WorkflowsError(f"{self.path} is an @activity: run it from a workflow")


class WorkflowFunction(Function[P, R]):
    kind: Kind = "workflow"

    def run(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Inside a workflow: start this workflow as a child and wait for its result."""
        return _schedule_step(self, _NO_OPTIONS, args, kwargs)


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
        made = cls(f, **settings)
        if cls.kind == "workflow":
            check_workflow(f, made.path, Settings.current().determinism_check)
        return made

    return wrap(fn) if fn is not None else wrap


def _schedule_of(
    fn_kind: str,
    schedule: str | Schedule | None,
    timezone: str | None,
    schedule_args: tuple[Any, ...] | list[Any] | None,
    schedule_kwargs: dict[str, Any] | None,
    catchup: bool | None,
) -> Schedule | None:
    """A decorator's schedule: a cron string with its options, or a Schedule object."""
    extras = (timezone, schedule_args, schedule_kwargs, catchup)
    if schedule is None:
        if any(x is not None for x in extras):
            raise ConfigurationError(
                f"timezone, schedule_args, schedule_kwargs and catchup go with schedule= "
                f"(@{fn_kind} has none)"
            )
        return None
    if isinstance(schedule, Schedule):
        if any(x is not None for x in extras):
            raise ConfigurationError(
                "give timezone, arguments and catchup inside the Schedule object, not beside it"
            )
        return schedule
    if not isinstance(schedule, str):
        raise ConfigurationError(
            f"schedule must be a cron string or a Schedule, got {type(schedule).__name__}"
        )
    # As given: Schedule.validated() refuses what is wrong (a string as the arguments, "" as
    # the timezone) rather than this turning it into something else.
    given: Any = Schedule
    return given(  # type: ignore[no-any-return]
        schedule,
        args=() if schedule_args is None else schedule_args,
        kwargs={} if schedule_kwargs is None else schedule_kwargs,
        timezone="UTC" if timezone is None else timezone,
        catchup=False if catchup is None else catchup,
    )


# The decorators' overloads take an awaitable-returning function first, so that R is what an
# `async def` returns once awaited (the worker awaits it), not the coroutine its call gives.
class _JobDecorator(Protocol):
    """What ``@job(...)`` with options returns."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> JobFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> JobFunction[P, R]: ...


class _ActivityDecorator(Protocol):
    """What ``@activity(...)`` with options returns."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> ActivityFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> ActivityFunction[P, R]: ...


@overload
def job(fn: Callable[P, Awaitable[R]], /) -> JobFunction[P, R]: ...
@overload
def job(fn: Callable[P, R], /) -> JobFunction[P, R]: ...
@overload
def job(
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
    schedule: str | Schedule | None = None,
    timezone: str | None = None,
    schedule_args: tuple[Any, ...] | list[Any] | None = None,
    schedule_kwargs: dict[str, Any] | None = None,
    catchup: bool | None = None,
    concurrency_key: KeyOption = None,
    concurrency_limit: int | None = None,
    rate_key: KeyOption = None,
) -> _JobDecorator: ...
def job(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
    schedule: str | Schedule | None = None,
    timezone: str | None = None,
    schedule_args: tuple[Any, ...] | list[Any] | None = None,
    schedule_kwargs: dict[str, Any] | None = None,
    catchup: bool | None = None,
    concurrency_key: KeyOption = None,
    concurrency_limit: int | None = None,
    rate_key: KeyOption = None,
) -> Any:
    """A background job: ``await f.queue(...)`` runs it on a worker serving its queue.

    ``schedule`` (a cron string, or a :class:`~workflows.schedules.Schedule`) also runs it on
    its own; ``concurrency_key`` (a string or a function of the call's arguments) lets at
    most ``concurrency_limit`` (1) runs with the same key run at once; ``rate_key`` shares a
    rate limit set with ``workflows.rate_limits.set``.
    """
    return _decorate(
        JobFunction,
        fn,
        queue=queue,
        retries=retries,
        timeout=timeout,
        priority=priority,
        schedule=_schedule_of("job", schedule, timezone, schedule_args, schedule_kwargs, catchup),
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        rate_key=rate_key,
    )


@overload
def activity(fn: Callable[P, Awaitable[R]], /) -> ActivityFunction[P, R]: ...
@overload
def activity(fn: Callable[P, R], /) -> ActivityFunction[P, R]: ...
@overload
def activity(
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
    concurrency_key: KeyOption = None,
    concurrency_limit: int | None = None,
    rate_key: KeyOption = None,
) -> _ActivityDecorator: ...
def activity(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
    concurrency_key: KeyOption = None,
    concurrency_limit: int | None = None,
    rate_key: KeyOption = None,
) -> Any:
    """A durable workflow step: ``await f.run(...)`` in a workflow; never re-run once recorded."""
    return _decorate(
        ActivityFunction,
        fn,
        queue=queue,
        retries=retries,
        timeout=timeout,
        priority=priority,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        rate_key=rate_key,
    )


# Only the awaitable form: a workflow must be an `async def` (refused at decoration otherwise).
@overload
def workflow(fn: Callable[P, Awaitable[R]], /) -> WorkflowFunction[P, R]: ...
@overload
def workflow(
    *,
    queue: str | None = None,
    version: int = 1,
    timeout: float | None = None,
    priority: int = 0,
    schedule: str | Schedule | None = None,
    timezone: str | None = None,
    schedule_args: tuple[Any, ...] | list[Any] | None = None,
    schedule_kwargs: dict[str, Any] | None = None,
    catchup: bool | None = None,
    concurrency_key: KeyOption = None,
    concurrency_limit: int | None = None,
    rate_key: KeyOption = None,
) -> Callable[[Callable[P, Awaitable[R]]], WorkflowFunction[P, R]]: ...
def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    queue: str | None = None,
    version: int = 1,
    timeout: float | None = None,
    priority: int = 0,
    schedule: str | Schedule | None = None,
    timezone: str | None = None,
    schedule_args: tuple[Any, ...] | list[Any] | None = None,
    schedule_kwargs: dict[str, Any] | None = None,
    catchup: bool | None = None,
    concurrency_key: KeyOption = None,
    concurrency_limit: int | None = None,
    rate_key: KeyOption = None,
) -> Any:
    """A durable workflow: deterministic code whose steps are recorded and replayed.

    ``schedule``, ``concurrency_key`` and ``rate_key`` as for :func:`job`; a workflow holds its
    concurrency key from its start to its end, waiting included.
    """
    _check_version(version)
    return _decorate(
        WorkflowFunction,
        fn,
        queue=queue,
        retries=None,
        timeout=timeout,
        priority=priority,
        version=version,
        schedule=_schedule_of(
            "workflow", schedule, timezone, schedule_args, schedule_kwargs, catchup
        ),
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        rate_key=rate_key,
    )


# ---- calls made from workflow code ---------------------------------------------------------


async def wait_for_signal(name: str, timeout: float | None = None) -> Any:
    """Wait (durably) for the next signal called ``name``; its payload.

    Raises :class:`workflows.SignalTimeoutError` (a ``TimeoutError``) after ``timeout`` seconds.
    """
    _check_text("signal name", name, max_chars=MAX_NAME_CHARS)
    _check_seconds("timeout", timeout)
    instance = _require_instance("wait_for_signal()")
    return await instance.step(WaitSignal(-1, name, timeout))


async def sleep(seconds: float) -> None:
    """A durable timer: survives worker restarts and holds no worker slot while it waits."""
    _check_seconds("seconds", seconds)
    instance = _require_instance("workflows.sleep()")
    await instance.step(StartTimer(-1, float(seconds)))


def get_version(change_id: str, min_supported: int, max_supported: int) -> int:
    """Which side of a code change this execution takes (see README: Versioning)."""
    _check_text("change_id", change_id, max_chars=MAX_NAME_CHARS)
    if change_id.startswith("workflows."):
        raise ConfigurationError(
            f"change_id {change_id!r}: names starting with 'workflows.' are the library's own"
        )
    # The chosen version is recorded as JSON and compared as an int on replay.
    for name, value in (("min_supported", min_supported), ("max_supported", max_supported)):
        _check_number(name, value, minimum=-(2**63), maximum=2**63 - 1, integer=True)
    instance = _require_instance("get_version()")
    return instance.version(change_id, min_supported, max_supported)


# ---- calls made from anywhere --------------------------------------------------------------


def _check_signal_args(name: str, payload: Any, settings: Settings) -> str:
    _check_text("signal name", name, max_chars=MAX_NAME_CHARS)
    return codec.current(settings).encode(
        payload, what="signal payload", max_bytes=settings.max_payload_bytes
    )


async def send_signal(workflow_id: str, name: str, payload: Any = None) -> None:
    """Store a signal for a workflow durably and wake it.

    Raises ``WorkflowNotFoundError`` for every kind of missing workflow: a malformed id, an
    unknown id, and the id of a job or an activity. Raises ``SignalError`` (its base class)
    for a workflow that has already finished: no wait of it can take the signal any more.
    """
    settings = Settings.current()
    text = _check_signal_args(name, payload, settings)
    store = async_store(settings)
    if (tracer := tracing.tracer(settings)) is not None:
        await tracer.signal(
            str(workflow_id), name, lambda: store.send_signal(str(workflow_id), name, text)
        )
        return
    await store.send_signal(str(workflow_id), name, text)


def send_signal_sync(workflow_id: str, name: str, payload: Any = None) -> None:
    """``send_signal`` for synchronous code; the same errors."""
    settings = Settings.current()
    text = _check_signal_args(name, payload, settings)
    store = sync_store(settings)
    if (tracer := tracing.tracer(settings)) is not None:
        tracer.signal_sync(
            str(workflow_id), name, lambda: store.send_signal(str(workflow_id), name, text)
        )
        return
    store.send_signal(str(workflow_id), name, text)


async def get_status(execution_id: str) -> dict[str, Any]:
    """The same fields as ``workflows status ID --json``."""
    return await async_store().get_status(str(execution_id))


def get_status_sync(execution_id: str) -> dict[str, Any]:
    return sync_store().get_status(str(execution_id))


def _result_of(status: dict[str, Any]) -> Any:
    from workflows.errors import ExecutionCancelledError, ExecutionFailedError

    if status["status"] == "completed":
        from workflows.executions import unreadable

        why = unreadable(status["result"])
        if why is not None:
            # Written by another role, past what this process's JSON decoder reads.
            raise SerializationError(f"the stored result of {status['id']} cannot be read: {why}")
        # The status shows the stored JSON (unwrapped if it can be): the value is built here.
        return codec.current().decode_stored(status["result"])
    if status["status"] == "cancelled":
        raise ExecutionCancelledError(f"execution {status['id']} was cancelled")
    raise ExecutionFailedError(status["id"], status["error"])


# An ExecutionId from `.queue()` knows its function's result type; a plain str id does not.
# The middle overload is met only by an ExecutionId whose result type conflicts with the type
# expected of the call (see ResultTypeMismatch).
@overload
async def get_result(execution_id: ExecutionId[R], timeout: float | None = None) -> R: ...
@overload
async def get_result(
    execution_id: ExecutionId[Any], timeout: float | None = None
) -> ResultTypeMismatch: ...
@overload
async def get_result(execution_id: str, timeout: float | None = None) -> Any: ...
async def get_result(execution_id: str, timeout: float | None = None) -> Any:
    """Wait for an execution to finish; its result, or its recorded error raised.

    Raises ``TimeoutError`` if it has not finished within ``timeout`` seconds. Typed as the
    function's result for an id returned by ``.queue()`` (an :class:`ExecutionId`).
    """
    status = await async_store().wait_finished(str(execution_id), timeout)
    return _result_of(status)


@overload
def get_result_sync(execution_id: ExecutionId[R], timeout: float | None = None) -> R: ...
@overload
def get_result_sync(
    execution_id: ExecutionId[Any], timeout: float | None = None
) -> ResultTypeMismatch: ...
@overload
def get_result_sync(execution_id: str, timeout: float | None = None) -> Any: ...
def get_result_sync(execution_id: str, timeout: float | None = None) -> Any:
    return _result_of(sync_store().wait_finished(str(execution_id), timeout))


async def cancel(execution_id: str) -> str:
    """Cancel an execution (and what a workflow started).

    Returns ``cancelled`` (done), ``cancelling`` (its worker is told to stop it) or
    ``already <status>`` when it had finished.
    """
    return await async_store().cancel(str(execution_id))


def cancel_sync(execution_id: str) -> str:
    """``cancel`` for synchronous code: ``cancelled``, ``cancelling`` or ``already <status>``.

    Raises ``ExecutionNotFoundError`` for an unknown or malformed id.
    """
    return sync_store().cancel(str(execution_id))
