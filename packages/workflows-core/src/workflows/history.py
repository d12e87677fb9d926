"""What a workflow's history holds (step records) and what the engine asks for (commands)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

StepKind = Literal["activity", "child", "timer", "signal", "version"]
StepStatus = Literal["scheduled", "completed", "failed", "cancelled"]


@dataclass(frozen=True)
class StepRecord:
    """One position of a workflow's history.

    ``delivered_in`` is the activation in which the workflow code was handed the resolution.
    Replay hands resolutions over in the same groups, so code that interleaves branches
    (``asyncio.gather``) issues its steps in the same order as it did live.
    """

    seq: int
    kind: StepKind
    name: str
    status: StepStatus = "scheduled"
    result: Any = None
    error: dict[str, Any] | None = None
    delivered_in: int | None = None

    @property
    def resolved(self) -> bool:
        return self.status != "scheduled"


@dataclass(frozen=True)
class StepOptions:
    queue: str | None = None
    timeout: float | None = None
    retries: int | None = None
    priority: int | None = None
    version: int | None = None
    # Flow control (see workflows.flow): a key shares a concurrency limit, a rate key a rate.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_key: str | None = None


@dataclass(frozen=True)
class ScheduleActivity:
    seq: int
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: StepOptions = field(default_factory=StepOptions)
    kind: Literal["activity"] = "activity"
    # The arguments' JSON, made once where the call was checked (not part of what it is).
    encoded_args: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StartChild:
    seq: int
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: StepOptions = field(default_factory=StepOptions)
    kind: Literal["child"] = "child"
    # The arguments' JSON, made once where the call was checked (not part of what it is).
    encoded_args: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StartTimer:
    seq: int
    seconds: float
    name: str = ""
    kind: Literal["timer"] = "timer"


@dataclass(frozen=True)
class WaitSignal:
    seq: int
    name: str
    timeout: float | None = None
    kind: Literal["signal"] = "signal"


@dataclass(frozen=True)
class RecordVersion:
    seq: int
    name: str
    version: int
    kind: Literal["version"] = "version"


@dataclass(frozen=True)
class RecordMarker:
    """A value workflow code asked for that must replay the same (``workflows.now()``): kept
    as a version-kind step whose name no ``get_version`` may take (``workflows.*``)."""

    seq: int
    name: str
    value: Any
    kind: Literal["version"] = "version"


StepCommand = ScheduleActivity | StartChild | StartTimer | WaitSignal | RecordVersion | RecordMarker


@dataclass(frozen=True)
class Activation:
    """The outcome of running a workflow until it completes, fails or blocks."""

    commands: list[StepCommand]
    status: Literal["blocked", "completed", "failed"]
    result: Any = None
    error: dict[str, Any] | None = None
    # The activation's number and the history positions whose resolutions it handed over.
    number: int = 0
    delivered: tuple[int, ...] = ()
