"""The pure replay engine: runs workflow code against its history and returns new commands.

A workflow runs on a private, deterministic event loop (no clock, no I/O): each awaited step
is a future that is either resolved from history or left pending while the engine emits a
command for it. The same instance can be kept in memory and resumed with new resolutions
(the worker's sticky cache), or rebuilt from history on any worker; both paths hand the code
its resolutions in the same activation groups, so both take the same path through the code.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import logging
import random as _random
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from workflows.codec import error_payload
from workflows.errors import (
    ActivityError,
    ChildWorkflowError,
    ExecutionCancelledError,
    NonDeterminismError,
    SignalTimeoutError,
    VersionError,
    WorkflowsError,
)
from workflows.history import (
    Activation,
    RecordMarker,
    RecordVersion,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepCommand,
    StepRecord,
    WaitSignal,
)

log = logging.getLogger(__name__)

WorkflowFunction = Callable[..., Coroutine[Any, Any, Any]]

# The marker name workflows.now() records its value under (get_version refuses `workflows.*`).
NOW_MARKER = "workflows.now"


def _system_clock() -> datetime:
    return datetime.now(UTC)


class _DeterministicLoop(asyncio.AbstractEventLoop):
    """Just enough of an event loop for tasks, futures and ``asyncio.gather``; no time."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self.instance = instance
        self._ready: deque[asyncio.Handle] = deque()
        self._closed = False

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def time(self) -> float:
        raise WorkflowsError("workflow code has no clock: use workflows.sleep() for durable timers")

    def call_later(self, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:  # type: ignore[override]
        raise WorkflowsError(
            "asyncio.sleep and asyncio timeouts are not durable inside a workflow: "
            "use workflows.sleep() or wait_for_signal(timeout=...)"
        )

    call_at = call_later  # type: ignore[assignment]

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        log.debug("workflow loop: %s", context.get("message"))

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def run_ready(self) -> None:
        previous = asyncio.events._get_running_loop()
        # The worker's own loop is suspended in this synchronous call; swap it out so
        # asyncio.get_running_loop() inside workflow code finds this loop.
        asyncio.events._set_running_loop(self)
        try:
            while self._ready:
                handle = self._ready.popleft()
                if handle.cancelled():
                    continue
                try:
                    handle._run()
                except (SystemExit, KeyboardInterrupt) as exc:
                    # asyncio lets these two through to stop the loop: raised by workflow code,
                    # they would end the worker. They fail the workflow like any exception.
                    if self.instance._fatal is None:
                        self.instance._fatal = exc
        finally:
            asyncio.events._set_running_loop(previous)


def current_instance() -> WorkflowInstance | None:
    """The workflow being run on this thread, or None outside workflow code."""
    loop = asyncio.events._get_running_loop()
    if isinstance(loop, _DeterministicLoop):
        return loop.instance
    return None


class WorkflowInstance:
    """One live run of a workflow function, resumable with new resolutions."""

    def __init__(
        self,
        fn: WorkflowFunction,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        name: str = "",
        max_payload_bytes: int | None = None,
        seed: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = name or getattr(fn, "__qualname__", "workflow")
        # workflows.random() and uuid4(): a stream of the execution's own (its id), the same on
        # every replay; workflows.now(): the clock's reading the first time, recorded.
        self.seed = seed
        self._clock = clock or _system_clock
        self._random: _random.Random | None = None
        # The worker's WORKFLOWS_MAX_PAYLOAD_BYTES, so steps need not read the environment.
        self.max_payload_bytes = max_payload_bytes
        self._fn = fn
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        # Only the methods tasks, futures and gather use are implemented; the rest of the
        # abstract loop API is deliberately missing inside workflow code.
        self._loop = _DeterministicLoop(self)  # type: ignore[abstract]
        self._history: dict[int, StepRecord] = {}
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._next_seq = 0
        self._commands: list[StepCommand] = []
        self._fatal: BaseException | None = None
        self._versions: dict[str, int] = {}
        self._task: asyncio.Task[Any] | None = None
        self.activations = 0

    # ---- driving -------------------------------------------------------------------------

    @classmethod
    def replay(
        cls,
        fn: WorkflowFunction,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        history: Iterable[StepRecord],
        *,
        name: str = "",
        max_payload_bytes: int | None = None,
        seed: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> tuple[WorkflowInstance, Activation]:
        """Rebuild an instance from history and run it up to where history ends.

        Resolutions already handed to the code are handed over again in their recorded groups;
        those recorded but never handed over form the returned activation's ``delivered``.
        """
        instance = cls(
            fn, args, kwargs, name=name, max_payload_bytes=max_payload_bytes, seed=seed, clock=clock
        )
        records = sorted(history, key=lambda r: r.seq)
        # Steps start out unresolved; resolutions come back group by group.
        for record in records:
            instance._history[record.seq] = StepRecord(record.seq, record.kind, record.name)
        groups: dict[int, list[StepRecord]] = {}
        undelivered: list[StepRecord] = []
        for record in records:
            if record.kind == "version":
                instance._history[record.seq] = record
            elif record.resolved and record.delivered_in is not None:
                groups.setdefault(record.delivered_in, []).append(record)
            elif record.resolved:
                undelivered.append(record)
        activation = instance.activate(())
        # Only the last activation can legitimately ask for new steps; anything earlier is
        # kept too, so a divergence shows up as a mismatch instead of vanishing.
        commands = list(activation.commands)
        for number in sorted(groups):
            if activation.status != "blocked":
                break
            instance.activations = number
            activation = instance.activate(groups[number])
            commands.extend(activation.commands)
        if activation.status == "blocked" and undelivered:
            activation = instance.activate(undelivered)
            commands.extend(activation.commands)
        elif activation.delivered:
            # Those were handed over (and marked) long ago; nothing new to mark.
            activation = dataclasses.replace(activation, delivered=())
        instance._check_history_consumed()
        if instance._fatal is not None:
            return instance, instance._outcome([], activation.number, activation.delivered)
        return instance, dataclasses.replace(activation, commands=commands)

    def activate(self, resolutions: Iterable[StepRecord] = ()) -> Activation:
        """Hand over new resolutions, run until the code blocks, and return what it asks for."""
        if self._task is not None and self._task.done():
            raise WorkflowsError(f"workflow {self.name} has already finished")
        number = self.activations
        self.activations += 1
        self._commands = []
        delivered: list[int] = []
        for record in sorted(resolutions, key=lambda r: r.seq):
            if record.kind == "version" or not record.resolved:
                continue
            known = self._history.get(record.seq)
            if known is not None and known.resolved:
                continue
            self._history[record.seq] = record
            future = self._futures.pop(record.seq, None)
            if future is not None and not future.done():
                self._settle(future, record)
            delivered.append(record.seq)
        if self._task is None:
            self._task = self._loop.create_task(self._fn(*self._args, **self._kwargs))
        self._loop.run_ready()
        commands, self._commands = self._commands, []
        return self._outcome(commands, number, tuple(delivered))

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def pending_seqs(self) -> list[int]:
        return sorted(seq for seq, fut in self._futures.items() if not fut.done())

    def is_pending(self, seq: int | None) -> bool:
        """Whether ``seq`` is among :attr:`pending_seqs` (without sorting them all)."""
        future = self._futures.get(seq) if seq is not None else None
        return future is not None and not future.done()

    def close(self) -> None:
        """Drop a suspended run (evicted from a cache): its coroutines are closed, not resumed."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                self._loop.run_ready()
            except Exception:  # pragma: no cover - cleanup is best effort
                log.debug("error closing workflow %s", self.name, exc_info=True)
        self._loop.close()

    # ---- what workflow code calls (through workflows.api) --------------------------------

    def step(self, command: StepCommand) -> asyncio.Future[Any]:
        """Claim the next history position for ``command``; a future of its resolution."""
        seq = self._next_seq
        self._next_seq += 1
        future: asyncio.Future[Any] = self._loop.create_future()
        record = self._history.get(seq)
        if record is None:
            command = _with_seq(command, seq)
            self._commands.append(command)
            self._history[seq] = StepRecord(seq, command.kind, command.name)
            self._futures[seq] = future
            return future
        if (record.kind, record.name) != (command.kind, command.name):
            self._diverged(seq, record, command)
            future.set_exception(self._fatal or NonDeterminismError("diverged"))
            return future
        if record.resolved:
            self._settle(future, record)
        else:
            self._futures[seq] = future
        return future

    def now(self) -> datetime:
        """The clock's reading, recorded at the next history position the first time this
        call is reached and read back from there on every replay."""
        seq = self._next_seq
        self._next_seq += 1
        record = self._history.get(seq)
        if record is None:
            value = self._clock()
            text = value.isoformat()
            self._commands.append(RecordMarker(seq, NOW_MARKER, text))
            self._history[seq] = StepRecord(seq, "version", NOW_MARKER, "completed", result=text)
            return value
        if (record.kind, record.name) != ("version", NOW_MARKER):
            self._diverged(seq, record, RecordMarker(seq, NOW_MARKER, None))
            raise self._fatal or NonDeterminismError("diverged")
        try:
            return datetime.fromisoformat(str(record.result))
        except ValueError:
            self._fatal = NonDeterminismError(
                f"workflow {self.name}: step {seq} holds {record.result!r}, not a time"
            )
            raise self._fatal from None

    def random(self) -> _random.Random:
        """The execution's own random stream, seeded by its id: the same numbers in the same
        order on every replay."""
        if self._random is None:
            digest = hashlib.sha256(f"workflows.random:{self.seed}".encode()).digest()
            self._random = _random.Random(int.from_bytes(digest[:16], "big"))
        return self._random

    def version(self, change_id: str, min_supported: int, max_supported: int) -> int:
        if min_supported > max_supported:
            raise ValueError("get_version: min_supported is greater than max_supported")
        decided = self._versions.get(change_id)
        if decided is not None:
            # One execution takes one side of a change, wherever the change is asked about.
            if not min_supported <= decided <= max_supported:
                self._fatal = VersionError(
                    f"get_version({change_id!r}) is {decided} in this execution, outside the "
                    f"range this call supports ({min_supported}..{max_supported})"
                )
                raise self._fatal
            return decided
        value = self._decide_version(change_id, min_supported, max_supported)
        self._versions[change_id] = value
        return value

    def _decide_version(self, change_id: str, min_supported: int, max_supported: int) -> int:
        seq = self._next_seq
        record = self._history.get(seq)
        if record is None:
            self._next_seq += 1
            self._commands.append(RecordVersion(seq, change_id, max_supported))
            self._history[seq] = StepRecord(
                seq, "version", change_id, "completed", result=max_supported
            )
            return max_supported
        if record.kind == "version" and record.name == change_id:
            self._next_seq += 1
            value = record.result
            if not isinstance(value, int) or not min_supported <= value <= max_supported:
                self._fatal = VersionError(
                    f"get_version({change_id!r}) recorded {value!r} at step {seq}, outside "
                    f"the range this code supports ({min_supported}..{max_supported})"
                )
                raise self._fatal
            return value
        # History written by code that predates this call goes on past it: the old path.
        return min_supported

    # ---- internals -----------------------------------------------------------------------

    def _settle(self, future: asyncio.Future[Any], record: StepRecord) -> None:
        if record.status == "completed":
            future.set_result(record.result)
        else:
            future.set_exception(_step_exception(record))

    def _diverged(self, seq: int, record: StepRecord, command: StepCommand) -> None:
        if self._fatal is None:
            self._fatal = NonDeterminismError(
                f"workflow {self.name} diverged from its history at step {seq}: history holds "
                f"{_describe(record.kind, record.name)}, the code asked for "
                f"{_describe(command.kind, command.name)}"
            )

    def _check_history_consumed(self) -> None:
        if not self.done or self._fatal is not None:
            return
        extra = [seq for seq in self._history if seq >= self._next_seq]
        if extra:
            first = self._history[min(extra)]
            self._fatal = NonDeterminismError(
                f"workflow {self.name} completed after {self._next_seq} steps but its history "
                f"holds {_describe(first.kind, first.name)} at step {first.seq}"
            )

    def _outcome(
        self, commands: list[StepCommand], number: int, delivered: tuple[int, ...]
    ) -> Activation:
        if self._fatal is not None:
            return Activation(
                [], "failed", error=error_payload(self._fatal), number=number, delivered=delivered
            )
        task = self._task
        assert task is not None
        if not task.done():
            return Activation(commands, "blocked", number=number, delivered=delivered)
        if task.cancelled():
            error = error_payload(
                ExecutionCancelledError("workflow cancelled"), with_traceback=False
            )
            return Activation([], "failed", error=error, number=number, delivered=delivered)
        exc = task.exception()
        if exc is not None:
            return Activation(
                [], "failed", error=error_payload(exc), number=number, delivered=delivered
            )
        return Activation([], "completed", result=task.result(), number=number, delivered=delivered)


def _with_seq(command: StepCommand, seq: int) -> StepCommand:
    if command.seq == seq:
        return command
    # dataclasses.replace, without its walk over the fields (once per step a workflow takes):
    # the commands are plain frozen dataclasses, no __post_init__, no slots.
    copy = object.__new__(type(command))
    copy.__dict__.update(command.__dict__)
    copy.__dict__["seq"] = seq
    return copy


def _describe(kind: str, name: str) -> str:
    if kind == "timer":
        return "a timer (sleep)"
    if kind == "signal":
        return f"a wait for signal {name!r}"
    if kind == "version" and name == NOW_MARKER:
        return "a reading of workflows.now()"
    if kind == "version":
        return f"a version marker {name!r}"
    return f"{kind} {name!r}"


def _step_exception(record: StepRecord) -> BaseException:
    error = record.error or {}
    if record.status == "cancelled":
        return ExecutionCancelledError(f"{record.kind} {record.name!r} was cancelled")
    if record.kind == "signal":
        return SignalTimeoutError(error.get("message") or f"no signal {record.name!r} in time")
    if record.kind == "child":
        return ChildWorkflowError(record.name, error)
    if record.kind == "timer":
        return ExecutionCancelledError("timer cancelled")
    return ActivityError(record.name, error)


__all__ = [
    "Activation",
    "ScheduleActivity",
    "StartChild",
    "StartTimer",
    "StepRecord",
    "WaitSignal",
    "WorkflowInstance",
    "current_instance",
]
