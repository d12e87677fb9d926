"""Time, randomness and ids in workflow code replay exactly; calls that would not are reported
when a workflow is declared (pure engine, no database)."""

from __future__ import annotations

import random
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import workflows
from workflows import activity, get_version, workflow
from workflows.determinism import DeterminismWarning
from workflows.errors import ConfigurationError, NonDeterminismError
from workflows.history import RecordMarker, StepRecord
from workflows.replay import NOW_MARKER, WorkflowInstance

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@activity
def double(x: int) -> int:
    return x * 2


@workflow
async def timed() -> dict[str, Any]:
    before = workflows.now()
    doubled = await double.run(21)
    after = workflows.now()
    doubled += await double.run(0)
    rng = workflows.random()
    return {
        "before": before.isoformat(),
        "after": after.isoformat(),
        "doubled": doubled,
        "draws": [rng.random() for _ in range(3)],
        "id": str(workflows.uuid4()),
    }


@workflow
async def reserved() -> int:
    return get_version("workflows.now", 1, 2)


def _clock(*readings: datetime) -> Any:
    it = iter(readings)
    return lambda: next(it)


def _records(instance: WorkflowInstance, commands: list[Any], number: int) -> list[StepRecord]:
    out = []
    for c in commands:
        if isinstance(c, RecordMarker):
            out.append(StepRecord(c.seq, "version", c.name, "completed", c.value, None, number))
        else:
            out.append(StepRecord(c.seq, c.kind, c.name))
    return out


def _run_live(seed: str) -> tuple[Any, list[StepRecord]]:
    """The workflow run as a worker would: the first reading at 12:00, the second a day on;
    each activity resolved in the next activation."""
    instance = WorkflowInstance(
        timed.fn, (), name=timed.path, seed=seed, clock=_clock(T0, T0 + timedelta(days=1))
    )
    activation = instance.activate()
    history: list[StepRecord] = []
    number = 0
    while activation.status == "blocked":
        history += _records(instance, activation.commands, number)
        number += 1
        (pending,) = [r for r in history if r.kind == "activity" and not r.resolved]
        resolved = StepRecord(pending.seq, "activity", double.path, "completed", 42, None, number)
        history = [resolved if r.seq == pending.seq else r for r in history]
        activation = instance.activate([resolved])
    assert activation.status == "completed", activation.error
    return activation.result, history


def test_now_is_recorded_the_first_time_and_read_back_on_replay() -> None:
    result, history = _run_live("wf-1")
    assert result["before"] == T0.isoformat()
    assert result["after"] == (T0 + timedelta(days=1)).isoformat()
    assert [(r.kind, r.name) for r in history] == [
        ("version", NOW_MARKER),
        ("activity", double.path),
        ("version", NOW_MARKER),
        ("activity", double.path),
    ]
    assert result["doubled"] == 84

    # Replayed much later, on a clock that must not be read: the same values.
    def no_clock() -> datetime:
        raise AssertionError("a replay read the clock")

    _, activation = WorkflowInstance.replay(
        timed.fn, (), {}, history, name=timed.path, seed="wf-1", clock=no_clock
    )
    assert activation.status == "completed"
    assert activation.result == result


def test_random_and_uuid4_follow_the_execution_not_the_process() -> None:
    first, _ = _run_live("wf-1")
    again, _ = _run_live("wf-1")
    other, _ = _run_live("wf-2")
    assert first["draws"] == again["draws"] and first["id"] == again["id"]
    assert first["draws"] != other["draws"] and first["id"] != other["id"]
    assert uuid.UUID(first["id"]).version == 4


def test_a_now_where_history_holds_another_step_is_a_divergence() -> None:
    history = [StepRecord(0, "activity", double.path, "completed", 42, None, 0)]
    _, activation = WorkflowInstance.replay(timed.fn, (), {}, history, name=timed.path)
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == NonDeterminismError.__name__
    assert "workflows.now()" in activation.error["message"]


def test_the_helpers_refuse_outside_a_workflow_and_workflows_names_are_reserved() -> None:
    with pytest.raises(workflows.WorkflowsError, match=r"inside a @workflow"):
        workflows.now()
    with pytest.raises(workflows.WorkflowsError, match=r"inside a @workflow"):
        workflows.uuid4()

    instance = WorkflowInstance(reserved.fn, (), name=reserved.path)
    activation = instance.activate()
    assert activation.status == "failed"
    assert activation.error is not None and "library's own" in activation.error["message"]


def _declare(source_fn: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workflow(source_fn)
    return [str(w.message) for w in caught if issubclass(w.category, DeterminismWarning)]


async def reads_the_clock() -> float:
    started = datetime.now(UTC)
    stamp = time.time()
    pick = random.choice([1, 2])
    ident = uuid.uuid4()
    return stamp + pick + started.timestamp() + ident.int


async def uses_the_helpers() -> float:
    return workflows.now().timestamp() + workflows.random().random() + workflows.uuid4().int


def test_declaring_a_workflow_that_reads_the_clock_warns_with_the_helper_to_use() -> None:
    messages = _declare(reads_the_clock)
    assert len(messages) == 4, messages
    joined = "\n".join(messages)
    assert "calls datetime.now()," in joined and "use workflows.now()" in joined
    assert "time.time()" in joined and "workflows.now().timestamp()" in joined
    assert "random.choice()" in joined and "workflows.random().choice()" in joined
    assert "uuid.uuid4()" in joined and "use workflows.uuid4()" in joined
    assert all(m.startswith(f"workflow {__name__}:reads_the_clock (line ") for m in messages)
    assert _declare(uses_the_helpers) == []


def test_the_check_can_be_an_error_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOWS_DETERMINISM_CHECK", "error")
    with pytest.raises(ConfigurationError, match=r"datetime\.now"):
        workflow(reads_the_clock)
    monkeypatch.setenv("WORKFLOWS_DETERMINISM_CHECK", "off")
    assert _declare(reads_the_clock) == []
    monkeypatch.setenv("WORKFLOWS_DETERMINISM_CHECK", "loud")
    with pytest.raises(ConfigurationError, match="WORKFLOWS_DETERMINISM_CHECK"):
        workflow(reads_the_clock)
