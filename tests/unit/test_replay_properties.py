"""Replay properties over random workflow programs and random resolution orders.

One module-level workflow interprets a JSON program (activities, fan-outs, branches that run
their own sequences, timers, signals, version markers, caught failures, children, raises).
A live run is simulated the way the worker drives the engine: each activation's commands
become StepRecords, resolutions arrive in hypothesis-chosen groups, and each activation hands
over the resolved steps it is waiting on and marks them ``delivered_in``. Then:

(a) replaying the final history reproduces the outcome and asks for nothing new;
(b) replaying the history as the database held it after any activation (plus some
    resolutions not handed over yet) and going on live reaches the same outcome;
(c) at every activation, a replay of the database as it was just before it emits exactly
    what the live (sticky) instance emitted.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows import (
    ActivityError,
    SignalTimeoutError,
    activity,
    get_version,
    sleep,
    wait_for_signal,
    workflow,
)
from workflows.history import (
    Activation,
    RecordVersion,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepCommand,
    StepRecord,
    WaitSignal,
)
from workflows.replay import WorkflowInstance

# ---- the interpreted workflow --------------------------------------------------------------


@activity
def echo(value: int) -> int:
    return value


@activity
def flaky(value: int) -> int:
    raise RuntimeError(f"flaky {value}")


@workflow
async def plus_thousand(value: int) -> int:
    return value + 1000


async def _run_op(op: list[Any]) -> Any:
    kind = op[0]
    if kind == "act":
        return await echo.run(op[1])
    if kind == "gather":
        return list(await asyncio.gather(*(echo.run(v) for v in op[1])))
    if kind == "branches":
        return list(await asyncio.gather(*(_run_ops(branch) for branch in op[1])))
    if kind == "sleep":
        await sleep(op[1])
        return "slept"
    if kind == "signal":
        try:
            return await wait_for_signal(op[1], timeout=None if op[2] else 5)
        except SignalTimeoutError:
            return "timeout"
    if kind == "version":
        return get_version(op[1], 1, op[2])
    if kind == "fail":
        try:
            return await flaky.run(op[1])
        except ActivityError as exc:
            return ["caught", exc.message]
    if kind == "child":
        return await plus_thousand.run(op[1])
    if kind == "raise":
        raise ValueError("boom")
    raise AssertionError(f"unknown op {op!r}")


async def _run_ops(ops: list[list[Any]]) -> list[Any]:
    return [await _run_op(op) for op in ops]


@workflow
async def interpreter(program: list[list[Any]]) -> list[Any]:
    return await _run_ops(program)


class Boom(Exception):
    pass


def expected(ops: list[list[Any]]) -> list[Any]:
    """What the program computes, without the engine (a raise anywhere fails the run)."""
    out: list[Any] = []
    for op in ops:
        kind = op[0]
        if kind == "act":
            out.append(op[1])
        elif kind == "gather":
            out.append(list(op[1]))
        elif kind == "branches":
            out.append([expected(branch) for branch in op[1]])
        elif kind == "sleep":
            out.append("slept")
        elif kind == "signal":
            out.append({"signal": op[1]} if op[2] else "timeout")
        elif kind == "version":
            out.append(op[2])
        elif kind == "fail":
            out.append(["caught", f"flaky {op[1]}"])
        elif kind == "child":
            out.append(op[1] + 1000)
        else:
            raise Boom
    return out


# ---- programs ------------------------------------------------------------------------------

_values = st.integers(0, 50)
_leaf_ops = st.one_of(
    st.tuples(st.just("act"), _values),
    st.tuples(st.just("gather"), st.lists(_values, min_size=0, max_size=4)),
    st.tuples(st.just("sleep"), st.sampled_from([0, 1, 30])),
    st.tuples(st.just("signal"), st.sampled_from(["go", "stop"]), st.booleans()),
    # One change id per call site: how repeated ids share one decision is a unit test's subject.
    st.tuples(st.just("version"), st.uuids().map(str), st.integers(1, 3)),
    st.tuples(st.just("fail"), _values),
    st.tuples(st.just("child"), _values),
).map(list)
_raise_op = st.just(["raise"])


def _programs(depth: int, max_size: int) -> st.SearchStrategy[list[list[Any]]]:
    ops: st.SearchStrategy[list[Any]] = st.one_of(_leaf_ops, _leaf_ops, _leaf_ops, _raise_op)
    if depth > 0:
        # Branches as often as plain steps: interleaving is where replay can go wrong.
        branches = st.lists(_programs(depth - 1, 3), min_size=2, max_size=3)
        ops = st.one_of(ops, branches.map(lambda bs: ["branches", bs]))
    return st.lists(ops, min_size=1, max_size=max_size)


programs = _programs(2, 6)


def _fails(ops: list[list[Any]]) -> bool:
    try:
        expected(ops)
    except Boom:
        return True
    return False


# Most runs should complete; a few fail on purpose.
programs_mostly_ok = st.one_of(programs.filter(lambda p: not _fails(p)), programs)


# ---- the simulated database and worker -----------------------------------------------------


def resolution(command: StepCommand) -> StepRecord:
    """How the outside world answers a step: decided by the command, never by its position."""
    seq, kind, name = command.seq, command.kind, command.name
    if isinstance(command, ScheduleActivity):
        if name == echo.path:
            return StepRecord(seq, kind, name, "completed", result=command.args[0])
        assert name == flaky.path
        error = {"type": "RuntimeError", "message": f"flaky {command.args[0]}"}
        return StepRecord(seq, kind, name, "failed", error=error)
    if isinstance(command, StartChild):
        return StepRecord(seq, kind, name, "completed", result=command.args[0] + 1000)
    if isinstance(command, StartTimer):
        return StepRecord(seq, kind, name, "completed")
    assert isinstance(command, WaitSignal)
    if command.timeout is None:
        return StepRecord(seq, kind, name, "completed", result={"signal": name})
    error = {"type": "SignalTimeoutError", "message": f"no signal {name!r} in time"}
    return StepRecord(seq, kind, name, "failed", error=error)


@dataclass
class Db:
    """``workflow_steps`` of one workflow, written like the worker writes it."""

    steps: dict[int, StepRecord] = field(default_factory=dict)
    commands: dict[int, StepCommand] = field(default_factory=dict)

    def apply(self, activation: Activation) -> None:
        for seq in activation.delivered:
            assert self.steps[seq].resolved
            self.steps[seq] = replace(self.steps[seq], delivered_in=activation.number)
        for command in activation.commands:
            assert command.seq not in self.steps, f"step {command.seq} written twice"
            self.commands[command.seq] = command
            if isinstance(command, RecordVersion):
                self.steps[command.seq] = StepRecord(
                    command.seq,
                    "version",
                    command.name,
                    "completed",
                    result=command.version,
                    delivered_in=activation.number,
                )
            else:
                self.steps[command.seq] = StepRecord(command.seq, command.kind, command.name)

    def resolve(self, seq: int) -> None:
        assert not self.steps[seq].resolved
        self.steps[seq] = resolution(self.commands[seq])

    def unresolved(self) -> list[int]:
        return sorted(seq for seq, step in self.steps.items() if not step.resolved)

    def undelivered(self) -> list[int]:
        return sorted(
            seq
            for seq, step in self.steps.items()
            if step.resolved and step.delivered_in is None and step.kind != "version"
        )

    def history(self) -> list[StepRecord]:
        return list(self.steps.values())

    def copy(self) -> Db:
        return Db(dict(self.steps), dict(self.commands))


@dataclass
class Run:
    activations: list[Activation] = field(default_factory=list)
    # The database as the worker found it when it started each activation.
    before: list[Db] = field(default_factory=list)
    # ... and as it left it after writing that activation.
    after: list[Db] = field(default_factory=list)
    pending: list[list[int]] = field(default_factory=list)


def start(program: list[list[Any]]) -> WorkflowInstance:
    return WorkflowInstance(interpreter.fn, [copy.deepcopy(program)], name=interpreter.path)


def replay(program: list[list[Any]], db: Db) -> tuple[WorkflowInstance, Activation]:
    return WorkflowInstance.replay(
        interpreter.fn, [copy.deepcopy(program)], {}, db.history(), name=interpreter.path
    )


def drive(
    instance: WorkflowInstance, db: Db, first: Activation, data: st.DataObject, run: Run
) -> Activation:
    """Apply ``first`` and go on live (sticky) until the workflow finishes."""
    activation = first
    db.apply(activation)
    run.activations.append(activation)
    run.after.append(db.copy())
    run.pending.append(instance.pending_seqs)
    while activation.status == "blocked":
        unresolved = db.unresolved()
        assert unresolved, "blocked with no step left to resolve"
        # Now and then the worker wakes up with nothing new (a spurious wake-up, never twice
        # in a row so every run ends); otherwise some open steps get answers, in any mix.
        if activation.delivered or activation.number == 0:
            empty = data.draw(st.integers(0, 7), label="wake up empty") == 0
        else:
            empty = False
        if not empty:
            mask = data.draw(st.integers(1, 2 ** len(unresolved) - 1), label="arriving")
            for i, seq in enumerate(unresolved):
                if mask >> i & 1:
                    db.resolve(seq)
        run.before.append(db.copy())
        # The sticky path: load the pending steps, hand over the resolved ones.
        pending = instance.pending_seqs
        activation = instance.activate([db.steps[s] for s in pending if db.steps[s].resolved])
        assert set(activation.delivered) == set(db.undelivered())
        db.apply(activation)
        run.activations.append(activation)
        run.after.append(db.copy())
        run.pending.append(instance.pending_seqs)
    instance.close()
    return activation


def live_run(program: list[list[Any]], data: st.DataObject) -> tuple[Run, Db]:
    db = Db()
    run = Run(before=[db.copy()])
    instance = start(program)
    drive(instance, db, instance.activate(), data, run)
    return run, db


def outcome(activation: Activation) -> tuple[Any, ...]:
    error = activation.error or {}
    return (activation.status, activation.result, error.get("type"), error.get("message"))


def check_outcome(program: list[list[Any]], activation: Activation) -> None:
    try:
        want = expected(program)
    except Boom:
        assert outcome(activation) == ("failed", None, "ValueError", "boom")
    else:
        assert outcome(activation) == ("completed", want, None, None)


_settings = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


# ---- properties ----------------------------------------------------------------------------


@_settings
@given(program=programs_mostly_ok, data=st.data())
def test_live_run_computes_the_program_and_full_replay_reproduces_it(
    program: list[list[Any]], data: st.DataObject
) -> None:
    run, db = live_run(program, data)
    last = run.activations[-1]
    check_outcome(program, last)
    # The sticky instance numbers its activations one by one.
    assert [a.number for a in run.activations] == list(range(len(run.activations)))

    instance, replayed = replay(program, db)
    assert outcome(replayed) == outcome(last)
    assert replayed.commands == []
    assert instance.done


@_settings
@given(program=programs_mostly_ok, data=st.data())
def test_replay_before_each_activation_emits_what_the_live_run_emitted(
    program: list[list[Any]], data: st.DataObject
) -> None:
    run, _ = live_run(program, data)
    for k, live in enumerate(run.activations):
        db = run.before[k]
        instance, replayed = replay(program, db)
        assert replayed.commands == live.commands, f"activation {k}"
        assert outcome(replayed) == outcome(live), f"activation {k}"
        # Numbers may run behind the live ones (a spurious wake-up leaves no trace in the
        # database) but must keep the groups in order: only that is what replay relies on.
        delivered_so_far = max((s.delivered_in or 0 for s in db.steps.values()), default=0)
        assert replayed.number <= live.number
        if live.delivered:
            assert replayed.delivered == live.delivered, f"activation {k}"
            assert replayed.number > delivered_so_far
        else:
            # Nothing new: the replay repeats the last group it handed over (a no-op for
            # the worker, which marks the same steps with the same number again).
            assert replayed.number == delivered_so_far
        if live.status == "blocked":
            assert instance.pending_seqs == run.pending[k], f"activation {k}"
        instance.close()


@_settings
@given(program=programs_mostly_ok, data=st.data())
def test_replay_from_any_activation_boundary_then_live_reaches_the_same_outcome(
    program: list[list[Any]], data: st.DataObject
) -> None:
    run, _ = live_run(program, data)
    final = outcome(run.activations[-1])
    for k, activation in enumerate(run.activations):
        if activation.status != "blocked":
            continue
        db = run.after[k].copy()
        # Some of what the next activation handed over may already have arrived.
        arrived = run.before[k + 1].undelivered()
        mask = data.draw(st.integers(0, 2 ** len(arrived) - 1), label=f"arrived after {k}")
        for i, seq in enumerate(arrived):
            if mask >> i & 1:
                db.steps[seq] = run.before[k + 1].steps[seq]

        instance, replayed = replay(program, db)
        last = drive(instance, db, replayed, data, Run())
        assert outcome(last) == final, f"cut after activation {k}"
        check_outcome(program, last)

        # And the history the continuation left replays to the same end once more.
        _, again = replay(program, db)
        assert outcome(again) == final, f"cut after activation {k}"
        assert again.commands == []
