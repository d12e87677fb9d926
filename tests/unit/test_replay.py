"""The pure replay engine (workflows.replay): commands, resolutions, replay and divergence.

No database: history is built by hand as the worker would write it (commands become scheduled
StepRecords, version markers are completed at once, resolutions carry ``delivered_in``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workflows import (
    ActivityError,
    ChildWorkflowError,
    NonDeterminismError,
    SignalTimeoutError,
    VersionError,
    WorkflowsError,
    activity,
    get_version,
    sleep,
    wait_for_signal,
    workflow,
)
from workflows.api import WorkflowFunction
from workflows.history import (
    Activation,
    RecordVersion,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepCommand,
    StepOptions,
    StepRecord,
    WaitSignal,
)
from workflows.replay import WorkflowInstance

# ---- activities and workflows (module level: the decorators refuse nested functions) ---------


@activity
def add(a: int, b: int) -> int:
    return a + b


@activity
def double(x: int) -> int:
    return 2 * x


@activity
def charge(amount: int) -> str:
    return f"charged {amount}"


@activity
def refund(amount: int) -> str:
    return f"refunded {amount}"


@workflow
async def child_flow(x: int) -> int:
    return await double.run(x)


@workflow
async def two_adds(a: int, b: int) -> list[int]:
    first = await add.run(a, b)
    second = await add.run(first, 10)
    return [first, second]


@workflow
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(double.run(i) for i in range(n))))


async def _branch(tag: int) -> list[int]:
    first = await double.run(tag)
    second = await add.run(first, tag)
    return [first, second]


@workflow
async def two_branches() -> list[list[int]]:
    return list(await asyncio.gather(_branch(1), _branch(2)))


@workflow
async def charge_or_refund(amount: int) -> dict[str, Any]:
    try:
        return {"charged": await charge.run(amount)}
    except ActivityError as exc:
        return {
            "refund": await refund.run(amount),
            "name": exc.name,
            "type": exc.type,
            "message": exc.message,
        }


@workflow
async def raises_after_step() -> None:
    await double.run(1)
    raise ValueError("the order is gone")


@workflow
async def uncaught_activity_failure() -> int:
    return await charge.run(5)


@workflow
async def approval() -> Any:
    return await wait_for_signal("approve")


@workflow
async def approval_with_timeout() -> str:
    try:
        await wait_for_signal("approve", timeout=5)
    except TimeoutError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "approved"


@workflow
async def approval_uncaught_timeout() -> Any:
    return await wait_for_signal("approve", timeout=5)


@workflow
async def nap_then_double() -> int:
    await sleep(30)
    return await double.run(4)


@workflow
async def parent_flow(x: int) -> Any:
    try:
        return await child_flow.run(x)
    except ChildWorkflowError as exc:
        return {"child failed": exc.name, "type": exc.type}


@workflow
async def versioned() -> list[Any]:
    version = get_version("use-refund", 1, 2)
    if version == 2:
        return [version, await refund.run(1)]
    return [version, await charge.run(1)]


@workflow
async def versioned_twice() -> int:
    # Markers are positional: a second call for the same change records a second marker.
    first = get_version("a", 1, 3)
    second = get_version("a", 1, 3)
    return await add.run(first, second)


@workflow
async def old_code() -> str:
    return await charge.run(1)


@workflow
async def other_name() -> str:
    return await refund.run(1)


@workflow
async def sleeps_instead() -> str:
    await sleep(1)
    return "slept"


@workflow
async def asyncio_sleeper() -> str:
    await asyncio.sleep(1)
    return "unreachable"


@workflow
async def asyncio_timeout() -> str:
    async with asyncio.timeout(5):
        await double.run(1)
    return "unreachable"


@workflow
async def asyncio_sleep_zero() -> int:
    # A bare yield to the loop needs no clock and is harmless.
    await asyncio.sleep(0)
    return await double.run(3)


@workflow
async def unserializable_argument() -> int:
    return await double.run(object())  # type: ignore[arg-type]


@workflow
async def mixed(n: int) -> dict[str, Any]:
    total = await add.run(n, 1)
    pair = await asyncio.gather(double.run(total), _branch(n))
    await sleep(10)
    try:
        signal = await wait_for_signal("go", timeout=60)
    except SignalTimeoutError:
        signal = "timed out"
    version = get_version("mixed-change", 1, 2)
    child = await child_flow.run(version)
    return {"total": total, "pair": list(pair), "signal": signal, "child": child}


# ---- helpers -------------------------------------------------------------------------------


def start(fn: WorkflowFunction[..., Any], *args: Any) -> tuple[WorkflowInstance, Activation]:
    instance = WorkflowInstance(fn.fn, args, name=fn.path)
    return instance, instance.activate()


def replay(
    fn: WorkflowFunction[..., Any], history: list[StepRecord], *args: Any
) -> tuple[WorkflowInstance, Activation]:
    return WorkflowInstance.replay(fn.fn, args, {}, history, name=fn.path)


def scheduled(seq: int, kind: Any, name: str) -> StepRecord:
    return StepRecord(seq, kind, name)


def completed(
    seq: int, kind: Any, name: str, result: Any = None, delivered_in: int | None = None
) -> StepRecord:
    return StepRecord(seq, kind, name, "completed", result=result, delivered_in=delivered_in)


def failed(
    seq: int,
    kind: Any,
    name: str,
    error: dict[str, Any] | None = None,
    delivered_in: int | None = None,
) -> StepRecord:
    error = error if error is not None else {"type": "RuntimeError", "message": "card declined"}
    return StepRecord(seq, kind, name, "failed", error=error, delivered_in=delivered_in)


def marker(seq: int, name: str, value: Any, delivered_in: int = 0) -> StepRecord:
    return StepRecord(seq, "version", name, "completed", result=value, delivered_in=delivered_in)


def as_records(activation: Activation) -> list[StepRecord]:
    """What the worker writes for an activation's commands."""
    records = []
    for command in activation.commands:
        if isinstance(command, RecordVersion):
            records.append(marker(command.seq, command.name, command.version, activation.number))
        else:
            records.append(StepRecord(command.seq, command.kind, command.name))
    return records


def kinds(commands: list[StepCommand]) -> list[tuple[int, str, str]]:
    return [(c.seq, c.kind, c.name) for c in commands]


# ---- sequential activities -----------------------------------------------------------------


def test_sequential_activities_schedule_one_step_per_activation() -> None:
    instance, first = start(two_adds, 1, 2)
    assert first.status == "blocked"
    assert first.number == 0
    assert first.delivered == ()
    assert first.commands == [ScheduleActivity(0, add.path, (1, 2), {}, StepOptions(priority=0))]
    assert instance.pending_seqs == [0]

    second = instance.activate([completed(0, "activity", add.path, 3)])
    assert second.status == "blocked"
    assert (second.number, second.delivered) == (1, (0,))
    assert second.commands == [ScheduleActivity(1, add.path, (3, 10), {}, StepOptions(priority=0))]

    last = instance.activate([completed(1, "activity", add.path, 13)])
    assert (last.status, last.result, last.commands) == ("completed", [3, 13], [])
    assert (last.number, last.delivered) == (2, (1,))
    assert instance.done
    with pytest.raises(WorkflowsError, match="already finished"):
        instance.activate()


def test_activation_without_new_resolutions_asks_for_nothing() -> None:
    instance, _ = start(two_adds, 1, 2)
    again = instance.activate()
    assert (again.status, again.commands, again.delivered, again.number) == (
        "blocked",
        [],
        (),
        1,
    )


def test_results_come_from_history_and_recorded_steps_are_not_scheduled_again() -> None:
    history = [
        completed(0, "activity", add.path, 3, delivered_in=1),
        completed(1, "activity", add.path, 13, delivered_in=2),
    ]
    _, activation = replay(two_adds, history, 1, 2)
    assert (activation.status, activation.result, activation.commands) == (
        "completed",
        [3, 13],
        [],
    )

    # The recorded result wins over what the arguments would compute today.
    _, activation = replay(
        two_adds,
        [
            completed(0, "activity", add.path, 100, delivered_in=1),
            completed(1, "activity", add.path, 7, delivered_in=2),
        ],
        1,
        2,
    )
    assert activation.result == [100, 7]


def test_replay_of_a_partial_history_asks_only_for_the_next_step() -> None:
    _, activation = replay(two_adds, [completed(0, "activity", add.path, 3, delivered_in=1)], 1, 2)
    assert activation.status == "blocked"
    assert kinds(activation.commands) == [(1, "activity", add.path)]
    assert activation.number == 1

    # Still scheduled: nothing new to ask for, the first step is not scheduled twice.
    instance, activation = replay(two_adds, [scheduled(0, "activity", add.path)], 1, 2)
    assert (activation.status, activation.commands) == ("blocked", [])
    assert instance.pending_seqs == [0]


def test_replay_hands_over_undelivered_resolutions_as_a_new_activation() -> None:
    instance, activation = replay(two_adds, [completed(0, "activity", add.path, 3)], 1, 2)
    assert activation.status == "blocked"
    assert (activation.number, activation.delivered) == (1, (0,))
    assert activation.commands == [
        ScheduleActivity(1, add.path, (3, 10), {}, StepOptions(priority=0))
    ]
    # The rebuilt instance goes on in memory like a sticky one.
    last = instance.activate([completed(1, "activity", add.path, 13)])
    assert (last.status, last.result, last.number, last.delivered) == (
        "completed",
        [3, 13],
        2,
        (1,),
    )


# ---- fan-out -------------------------------------------------------------------------------


def test_gather_emits_every_command_in_one_activation() -> None:
    instance, activation = start(fan_out, 4)
    assert activation.status == "blocked"
    assert [(c.seq, c.args) for c in activation.commands] == [(i, (i,)) for i in range(4)]
    assert all(isinstance(c, ScheduleActivity) for c in activation.commands)
    # Each a copy of its call's command with its position, whole (the encoded arguments too).
    assert [c.encoded_args for c in activation.commands] == [  # type: ignore[union-attr]
        f'{{"args":[{i}],"kwargs":{{}}}}' for i in range(4)
    ]
    assert instance.pending_seqs == [0, 1, 2, 3]


def test_gather_results_come_back_in_call_order_whatever_the_resolution_order() -> None:
    instance, _ = start(fan_out, 4)
    assert instance.activate([completed(3, "activity", double.path, "d")]).status == "blocked"
    both = instance.activate(
        [completed(1, "activity", double.path, "b"), completed(0, "activity", double.path, "a")]
    )
    assert (both.status, both.delivered) == ("blocked", (0, 1))
    assert instance.pending_seqs == [2]
    # What a worker asks of an activity's outcome (is its step still awaited?), unsorted.
    assert [s for s in (None, 0, 1, 2, 3, 4) if instance.is_pending(s)] == [2]
    last = instance.activate([completed(2, "activity", double.path, "c")])
    assert (last.status, last.result) == ("completed", ["a", "b", "c", "d"])
    assert not instance.is_pending(2)


def test_replay_hands_resolutions_over_in_their_recorded_groups() -> None:
    # Live: both branches start (seq 0, 1); branch 2's result comes first, so its second step
    # takes seq 2 and branch 1's takes seq 3.
    instance, first = start(two_branches)
    assert [(c.seq, c.name, c.args) for c in first.commands] == [
        (0, double.path, (1,)),
        (1, double.path, (2,)),
    ]
    second = instance.activate([completed(1, "activity", double.path, 4)])
    assert [(c.seq, c.name, c.args) for c in second.commands] == [(2, add.path, (4, 2))]
    third = instance.activate([completed(0, "activity", double.path, 2)])
    assert [(c.seq, c.name, c.args) for c in third.commands] == [(3, add.path, (2, 1))]
    fourth = instance.activate(
        [completed(2, "activity", add.path, 6), completed(3, "activity", add.path, 3)]
    )
    assert (fourth.status, fourth.result) == ("completed", [[2, 3], [4, 6]])

    history = [
        completed(0, "activity", double.path, 2, delivered_in=2),
        completed(1, "activity", double.path, 4, delivered_in=1),
        completed(2, "activity", add.path, 6, delivered_in=3),
        completed(3, "activity", add.path, 3, delivered_in=3),
    ]
    _, replayed = replay(two_branches, history)
    assert (replayed.status, replayed.result, replayed.commands) == (
        "completed",
        [[2, 3], [4, 6]],
        [],
    )

    # The database after the third activation: all four steps, the first two delivered.
    cut = [*history[:2], scheduled(2, "activity", add.path), scheduled(3, "activity", add.path)]
    instance, replayed = replay(two_branches, cut)
    assert (replayed.status, replayed.commands, replayed.number) == ("blocked", [], 2)
    last = instance.activate(history[2:])
    assert (last.status, last.result, last.number) == ("completed", [[2, 3], [4, 6]], 3)

    # Handed over in one group, branch 1 would take seq 2 and get branch 2's result: the
    # names match, so nothing but the groups keeps the results with their branches.
    ungrouped = [StepRecord(**{**r.__dict__, "delivered_in": None}) for r in history]
    _, mixed_up = replay(two_branches, ungrouped)
    assert mixed_up.result == [[2, 6], [4, 3]]


# ---- failures ------------------------------------------------------------------------------


def test_activity_failure_is_raised_inside_the_workflow_and_can_be_caught() -> None:
    instance, _ = start(charge_or_refund, 30)
    error = {"type": "CardDeclined", "message": "insufficient funds"}
    compensate = instance.activate([failed(0, "activity", charge.path, error)])
    assert compensate.status == "blocked"
    assert kinds(compensate.commands) == [(1, "activity", refund.path)]
    last = instance.activate([completed(1, "activity", refund.path, "refunded 30")])
    assert last.status == "completed"
    assert last.result == {
        "refund": "refunded 30",
        "name": charge.path,
        "type": "CardDeclined",
        "message": "insufficient funds",
    }


def test_uncaught_exception_fails_the_workflow_with_its_type_and_message() -> None:
    instance, _ = start(raises_after_step)
    activation = instance.activate([completed(0, "activity", double.path, 2)])
    assert activation.status == "failed"
    assert activation.commands == []
    assert activation.error is not None
    assert activation.error["type"] == "ValueError"
    assert activation.error["message"] == "the order is gone"
    assert "raises_after_step" in activation.error["traceback"]


def test_uncaught_activity_failure_fails_the_workflow_as_activity_error() -> None:
    instance, _ = start(uncaught_activity_failure)
    activation = instance.activate([failed(0, "activity", charge.path)])
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == "ActivityError"
    assert activation.error["message"] == f"{charge.path} failed: RuntimeError: card declined"


# ---- signals, timers, children -------------------------------------------------------------


def test_wait_for_signal_emits_wait_signal_and_returns_the_payload() -> None:
    instance, activation = start(approval)
    assert activation.commands == [WaitSignal(0, "approve", None)]
    last = instance.activate([completed(0, "signal", "approve", {"by": "ada"})])
    assert (last.status, last.result) == ("completed", {"by": "ada"})


def test_signal_timeout_raises_signal_timeout_error_catchable_as_timeout_error() -> None:
    instance, activation = start(approval_with_timeout)
    assert activation.commands == [WaitSignal(0, "approve", 5)]
    error = {"type": "SignalTimeoutError", "message": "no signal 'approve' within 5 s"}
    last = instance.activate([failed(0, "signal", "approve", error)])
    assert (last.status, last.result) == (
        "completed",
        "SignalTimeoutError: no signal 'approve' within 5 s",
    )


def test_uncaught_signal_timeout_fails_the_workflow() -> None:
    instance, _ = start(approval_uncaught_timeout)
    last = instance.activate([failed(0, "signal", "approve", {})])
    assert last.status == "failed"
    assert last.error is not None
    assert last.error["type"] == "SignalTimeoutError"
    assert "approve" in last.error["message"]


def test_sleep_emits_a_start_timer_and_resumes_when_it_fires() -> None:
    instance, activation = start(nap_then_double)
    assert activation.commands == [StartTimer(0, 30.0)]
    after = instance.activate([completed(0, "timer", "")])
    assert kinds(after.commands) == [(1, "activity", double.path)]


def test_child_workflow_emits_start_child() -> None:
    instance, activation = start(parent_flow, 7)
    assert activation.commands == [
        StartChild(0, child_flow.path, (7,), {}, StepOptions(priority=0, version=1))
    ]
    last = instance.activate([completed(0, "child", child_flow.path, 14)])
    assert (last.status, last.result) == ("completed", 14)


def test_child_workflow_failure_raises_child_workflow_error() -> None:
    instance, _ = start(parent_flow, 7)
    last = instance.activate(
        [failed(0, "child", child_flow.path, {"type": "KeyError", "message": "'x'"})]
    )
    assert (last.status, last.result) == (
        "completed",
        {"child failed": child_flow.path, "type": "KeyError"},
    )


# ---- get_version ---------------------------------------------------------------------------


def test_get_version_at_the_frontier_records_max() -> None:
    instance, activation = start(versioned)
    assert activation.commands == [
        RecordVersion(0, "use-refund", 2),
        ScheduleActivity(1, refund.path, (1,), {}, StepOptions(priority=0)),
    ]
    last = instance.activate([completed(1, "activity", refund.path, "r")])
    assert (last.status, last.result) == ("completed", [2, "r"])


def test_get_version_called_twice_keeps_one_decision_and_one_marker() -> None:
    _, activation = start(versioned_twice)
    assert activation.commands == [
        RecordVersion(0, "a", 3),
        ScheduleActivity(1, add.path, (3, 3), {}, StepOptions(priority=0)),
    ]
    history = [*as_records(activation)[:1], scheduled(1, "activity", add.path)]
    _, replayed = replay(versioned_twice, history)
    assert (replayed.status, replayed.commands) == ("blocked", [])


@workflow
async def old_then_new_site() -> list[int]:
    first = get_version("change", 1, 2)
    await add.run(1, 1)
    second = get_version("change", 1, 2)
    await add.run(2, 2)
    return [first, second]


def test_execution_that_took_the_old_side_keeps_it_at_a_later_call() -> None:
    # Old code recorded the activity where the first call now stands: min there, and the
    # later call site (reached for the first time) must not switch to the new side.
    history = [completed(0, "activity", add.path, 2, delivered_in=1)]
    instance, activation = replay(old_then_new_site, history)
    assert activation.commands == [
        ScheduleActivity(1, add.path, (2, 2), {}, StepOptions(priority=0))
    ]
    last = instance.activate([completed(1, "activity", add.path, 4)])
    assert (last.status, last.result) == ("completed", [1, 1])


def test_get_version_on_replay_returns_the_recorded_value() -> None:
    history = [marker(0, "use-refund", 1), scheduled(1, "activity", charge.path)]
    _, activation = replay(versioned, history)
    assert (activation.status, activation.commands) == ("blocked", [])

    history[1] = completed(1, "activity", charge.path, "c", delivered_in=1)
    _, activation = replay(versioned, history)
    assert (activation.status, activation.result, activation.commands) == (
        "completed",
        [1, "c"],
        [],
    )


def test_get_version_on_old_history_takes_the_old_path_without_a_marker() -> None:
    # Written by code without the get_version call: position 0 holds its first step.
    _, activation = replay(versioned, [scheduled(0, "activity", charge.path)])
    assert (activation.status, activation.commands) == ("blocked", [])

    _, activation = replay(versioned, [completed(0, "activity", charge.path, "c", delivered_in=1)])
    assert (activation.status, activation.result, activation.commands) == (
        "completed",
        [1, "c"],
        [],
    )

    # The same history resolved but not yet delivered.
    _, activation = replay(versioned, [completed(0, "activity", charge.path, "c")])
    assert (activation.status, activation.result) == ("completed", [1, "c"])


def test_get_version_outside_the_supported_range_fails_with_version_error() -> None:
    _, activation = replay(versioned, [marker(0, "use-refund", 3)])
    assert activation.status == "failed"
    assert activation.commands == []
    assert activation.error is not None
    assert activation.error["type"] == "VersionError"
    assert "'use-refund'" in activation.error["message"]
    assert "recorded 3 at step 0" in activation.error["message"]
    assert "1..2" in activation.error["message"]

    _, activation = replay(versioned, [marker(0, "use-refund", "2")])
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == VersionError.__name__


def test_get_version_with_min_above_max_is_a_value_error() -> None:
    instance = WorkflowInstance(lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="min_supported"):
        instance.version("x", 3, 2)


# ---- divergence ----------------------------------------------------------------------------


def test_non_determinism_error_names_the_position_and_both_steps() -> None:
    history = [completed(0, "activity", charge.path, "c", delivered_in=1)]
    _, activation = replay(other_name, history)
    assert activation.status == "failed"
    assert activation.commands == []
    assert activation.error is not None
    assert activation.error["type"] == NonDeterminismError.__name__
    message = activation.error["message"]
    assert "step 0" in message
    assert f"history holds activity {charge.path!r}" in message
    assert f"the code asked for activity {refund.path!r}" in message


def test_non_determinism_error_describes_timers_signals_and_markers() -> None:
    _, activation = replay(sleeps_instead, [scheduled(0, "signal", "approve")])
    assert activation.error is not None
    assert (
        "history holds a wait for signal 'approve', the code asked for a timer (sleep)"
        in activation.error["message"]
    )

    _, activation = replay(old_code, [marker(0, "use-refund", 2)])
    assert activation.error is not None
    assert activation.error["type"] == "NonDeterminismError"
    assert "a version marker 'use-refund'" in activation.error["message"]


def test_completing_while_history_has_more_steps_is_non_determinism() -> None:
    history = [
        completed(0, "activity", charge.path, "c", delivered_in=1),
        scheduled(1, "activity", refund.path),
    ]
    _, activation = replay(old_code, history)
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == "NonDeterminismError"
    assert "completed after 1 steps" in activation.error["message"]
    assert f"activity {refund.path!r} at step 1" in activation.error["message"]


@workflow
async def swallows_errors() -> str:
    try:
        await refund.run(1)
    except Exception as exc:
        return f"carried on after {type(exc).__name__}"
    return "carried on"


def test_divergence_is_fatal_even_if_workflow_code_catches_it() -> None:
    _, activation = replay(swallows_errors, [scheduled(0, "activity", charge.path)])
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == "NonDeterminismError"


# ---- what is not allowed -------------------------------------------------------------------


def test_asyncio_sleep_inside_a_workflow_fails_clearly() -> None:
    _, activation = start(asyncio_sleeper)
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == "WorkflowsError"
    assert "asyncio.sleep" in activation.error["message"]
    assert "workflows.sleep()" in activation.error["message"]


def test_asyncio_timeout_inside_a_workflow_fails_clearly() -> None:
    _, activation = start(asyncio_timeout)
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == "WorkflowsError"
    assert "workflows.sleep()" in activation.error["message"]


def test_asyncio_sleep_zero_is_only_a_yield() -> None:
    _, activation = start(asyncio_sleep_zero)
    assert (activation.status, kinds(activation.commands)) == (
        "blocked",
        [(0, "activity", double.path)],
    )


def test_unserializable_step_argument_fails_the_workflow_at_the_call() -> None:
    _, activation = start(unserializable_argument)
    assert activation.status == "failed"
    assert activation.error is not None
    assert activation.error["type"] == "SerializationError"


def test_run_outside_a_workflow_raises() -> None:
    with pytest.raises(WorkflowsError, match=r"inside a @workflow function"):
        double.run(1)
    with pytest.raises(WorkflowsError, match=r"inside a @workflow function"):
        child_flow.run(1)
    with pytest.raises(WorkflowsError, match=r"get_version\(\) can only be used"):
        get_version("x", 1, 2)


async def test_workflow_calls_outside_a_workflow_raise_even_on_a_running_loop() -> None:
    with pytest.raises(WorkflowsError, match=r"wait_for_signal\(\) can only be used"):
        await wait_for_signal("approve")
    with pytest.raises(WorkflowsError, match=r"workflows.sleep\(\) can only be used"):
        await sleep(1)
    with pytest.raises(WorkflowsError, match="inside a @workflow function"):
        double.run(1)


async def test_activate_from_async_code_restores_the_callers_loop() -> None:
    loop = asyncio.get_running_loop()
    instance, activation = start(two_adds, 1, 2)
    assert activation.status == "blocked"
    assert asyncio.get_running_loop() is loop
    instance.close()


def test_close_drops_a_suspended_run() -> None:
    instance, _ = start(fan_out, 3)
    instance.close()
    assert instance.done


# ---- sticky and replay paths agree ---------------------------------------------------------


def run_both_ways(
    fn: WorkflowFunction[..., Any],
    args: tuple[Any, ...],
    answer: Any,
    pick: Any,
) -> tuple[Activation, dict[int, StepRecord]]:
    """Drive ``fn`` live like the worker's sticky path, writing history as the worker does;
    before every activation, a replay of what the database holds must do the same thing.

    ``answer(step)`` is the resolution of a step, ``pick(unresolved)`` the seqs whose
    resolutions arrive before the next activation.
    """
    instance, activation = start(fn, *args)
    history: dict[int, StepRecord] = {r.seq: r for r in as_records(activation)}
    while activation.status == "blocked":
        for seq in pick(sorted(s for s, r in history.items() if not r.resolved)):
            history[seq] = answer(history[seq])

        _, replayed = replay(fn, list(history.values()), *args)
        # The sticky path: the worker loads the steps the instance waits on.
        activation = instance.activate(
            [history[s] for s in instance.pending_seqs if history[s].resolved]
        )
        assert replayed.commands == activation.commands
        assert (replayed.status, replayed.result) == (activation.status, activation.result)
        assert (replayed.error or {}).get("message") == (activation.error or {}).get("message")
        # A replay also hands over resolutions of steps nobody waits on any more (a
        # cancelled branch) that the sticky path never loads: its activation may then have
        # delivered nothing (a number the database never sees) where the replay delivers.
        assert set(activation.delivered) <= set(replayed.delivered)
        assert replayed.number <= activation.number

        for seq in activation.delivered:
            history[seq] = StepRecord(
                **{**history[seq].__dict__, "delivered_in": activation.number}
            )
        for record in as_records(activation):
            assert record.seq not in history
            history[record.seq] = record
    _, final = replay(fn, list(history.values()), *args)
    assert (final.status, final.result, final.commands) == (
        activation.status,
        activation.result,
        [],
    )
    return activation, history


def test_sticky_and_replay_paths_emit_identical_commands() -> None:
    answers = {
        ("activity", add.path): 9,
        ("activity", double.path): 6,
        ("timer", ""): None,
        ("child", child_flow.path): 4,
    }

    def answer(step: StepRecord) -> StepRecord:
        if step.kind == "signal":
            return failed(step.seq, "signal", step.name, {"message": "late"})
        return completed(step.seq, step.kind, step.name, answers[(step.kind, step.name)])

    # One resolution at a time, newest first, to interleave the gather's branches.
    last, history = run_both_ways(mixed, (3,), answer, lambda seqs: seqs[-1:])
    assert last.status == "completed"
    assert last.result == {"total": 9, "pair": [6, [6, 9]], "signal": "timed out", "child": 4}
    assert last.number == len(history) - 1  # one activation per resolution, markers aside

    # Oldest first, and all that is open at once.
    assert run_both_ways(mixed, (3,), answer, lambda seqs: seqs[:1])[0].result == last.result
    assert run_both_ways(mixed, (3,), answer, lambda seqs: seqs)[0].result == last.result


@workflow
async def race_with_timer() -> str:
    work = double.run(1)
    timer = asyncio.ensure_future(sleep(60))
    done, _ = await asyncio.wait([work, timer], return_when=asyncio.FIRST_COMPLETED)
    if work in done:
        return f"work {work.result()}"
    return "timed out"


def _answer_all(step: StepRecord) -> StepRecord:
    if step.kind == "activity" and step.name == charge.path:
        return failed(step.seq, step.kind, step.name)
    return completed(step.seq, step.kind, step.name, step.seq)


@pytest.mark.parametrize(
    ("first", "outcome"), [([0], "work 0"), ([1], "timed out"), ([0, 1], "work 0")]
)
def test_a_durable_timeout_race_replays_to_the_same_winner(first: list[int], outcome: str) -> None:
    last, history = run_both_ways(race_with_timer, (), _answer_all, lambda seqs: first)
    assert (last.status, last.result) == ("completed", outcome)
    assert [(r.kind, r.resolved) for r in history.values()] == [
        ("activity", 0 in first),
        ("timer", 1 in first),
    ]


async def _charge_then_fail() -> None:
    await charge.run(1)


async def _double_slowly() -> None:
    await double.run(2)


@workflow
async def task_group_cancels_sibling() -> str:
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_charge_then_fail())
            group.create_task(_double_slowly())
    except* ActivityError:
        pass
    return await refund.run(1)


def test_a_cancelled_branch_whose_step_resolves_later_replays_the_same() -> None:
    rounds = iter([[0], [1], [2]])  # the charge fails, the cancelled double ends, refund
    last, history = run_both_ways(
        task_group_cancels_sibling, (), _answer_all, lambda seqs: next(rounds)
    )
    assert (last.status, last.result) == ("completed", 2)
    assert history[1].resolved
    assert history[1].delivered_in is None  # nobody waited on it: the sticky path skipped it
