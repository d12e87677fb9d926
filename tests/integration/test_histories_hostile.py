"""Histories that are not what an export writes: hand-edited, truncated, of another version,
hostile. Each one fails with one short line naming the field, or replays as the format says;
none reaches the engine half-checked. No database: replay needs none."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration import histories_app as app
from workflows import testing
from workflows.errors import ConfigurationError, NonDeterminismError, VersionError
from workflows.testing import HistoryFormatError, histories


@pytest.fixture(autouse=True)
def _v1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "DEPLOY", "v1")


def step(seq: int, kind: str, name: str, status: str, result: Any = None, **extra: Any) -> Any:
    return {
        "seq": seq,
        "kind": kind,
        "name": name,
        "status": status,
        "result": result,
        "error": extra.get("error"),
        "delivered_in": extra.get("delivered_in"),
    }


def history(status: str = "waiting") -> dict[str, Any]:
    """What v1 of the order records up to its wait for approval (see test_histories.py for
    the same from a real worker), then approved if ``status`` is completed."""
    error = {"type": "ValueError", "message": "nothing left for o-1"}
    steps = [
        step(0, "activity", app.charge.path, "completed", {"transaction_id": "t"}, delivered_in=1),
        step(1, "activity", app.reserve.path, "failed", error=error, delivered_in=2),
        step(2, "version", "gift_wrap", "completed", 2, delivered_in=2),
        step(3, "child", app.ship.path, "completed", {"box": "b"}, delivered_in=3),
        step(4, "timer", "", "completed", delivered_in=4),
        step(5, "signal", "approved", "scheduled"),
    ]
    if status == "completed":
        steps[5] = step(5, "signal", "approved", "completed", {"by": "x"}, delivered_in=5)
    return {
        "format": "workflows.history",
        "version": 1,
        "workflow": {
            "id": "0193ab00-0000-7000-8000-000000000000",
            "name": app.order.path,
            "version": 1,
            "status": status,
            "args": ["o-1", 42.5],
            "kwargs": {},
        },
        "steps": steps,
    }


def edited(path: str, value: Any, status: str = "waiting") -> dict[str, Any]:
    """The history with the field at ``path`` (dots; ``-`` deletes it) set to ``value``."""
    data = history(status)
    *parents, last = path.split(".")
    target: Any = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    key: Any = int(last) if isinstance(target, list) else last
    if value == "-":
        del target[key]
    else:
        target[key] = value
    return data


def test_the_base_histories_replay_so_each_failure_below_is_the_edit() -> None:
    waiting = testing.replay(history())
    assert (waiting.outcome, waiting.steps, waiting.new_steps) == ("blocked", 6, 0)
    done = testing.replay(history("completed"))
    assert done.outcome == "completed"
    assert done.result == {
        "transaction_id": "t",
        "reserved": "nothing left for o-1",
        "box": "b",
        "approved_by": "x",
    }
    # Fields replay does not read (informative, or added later to version 1) are ignored.
    extra = history()
    extra["signals"] = "anything"
    extra["workflow"]["queue"] = {"x": 1}
    extra["steps"][0]["scheduled_at"] = 7
    assert testing.replay(extra).outcome == "blocked"
    assert testing.read_history(extra) == extra


BAD_DOCUMENTS: list[tuple[Any, str]] = [
    ([], "a history is a dict or the path of a JSON file, got list"),
    ("{}", "cannot read the history file"),  # a str is a path
    ({}, "not a workflow history: no format field, not 'workflows.history'"),
    ({"format": "temporal", "version": 1}, "not a workflow history: format 'temporal'"),
    (edited("version", "-"), "version is missing"),
    (edited("version", "1"), "version must be a whole number, got '1'"),
    (edited("version", True), "version must be a whole number, got True"),
    (edited("version", 1.0), "version must be a whole number, got 1.0"),
    (
        edited("version", 2),
        "history format version 2 is newer than this code reads: upgrade workflows "
        "(this code reads version 1)",
    ),
    (edited("version", 0), "history format version 0 (this code reads version 1)"),
    (edited("version", 10**40), "is newer than this code reads"),
    (edited("workflow", "-"), "workflow is missing"),
    (edited("workflow", []), "workflow must be an object, got an array of 0 items"),
    (edited("workflow.name", "-"), "workflow.name is missing"),
    (edited("workflow.name", ""), "workflow.name must be non-empty text"),
    (edited("workflow.name", 7), "workflow.name must be non-empty text of at most 1000"),
    (edited("workflow.name", "no_separator"), "workflow.name must be a function path"),
    (edited("workflow.name", "m:" + "x" * 10**6), "(1000002 characters)"),
    (edited("workflow.args", {"a": 1}), "workflow.args must be an array, got an object"),
    (edited("workflow.args", "-"), "workflow.args is missing"),
    (edited("workflow.kwargs", []), "workflow.kwargs must be an object"),
    (edited("workflow.kwargs", {1: 2}), "workflow.kwargs must be an object"),
    (edited("workflow.status", "done"), "workflow.status must be one of pending, running"),
    (edited("workflow.status", None), "workflow.status must be one of"),
    (edited("workflow.version", "-"), "workflow.version is missing"),
    (edited("workflow.version", 0), "workflow.version must be a whole number from 1"),
    (edited("workflow.version", 2**40), "workflow.version must be a whole number from 1"),
    (edited("workflow.version", "1"), "workflow.version must be a whole number from 1"),
    (edited("workflow.id", 7), "workflow.id must be non-empty text of at most 100"),
    (edited("workflow.id", "x" * 101), "workflow.id must be non-empty text"),
    (edited("steps", "-"), "steps is missing"),
    (edited("steps", {}), "steps must be an array"),
    (edited("steps.0", "x"), "steps[0] must be an object, got 'x'"),
    (edited("steps.0.seq", 1), "steps[0].seq must be 0 (steps are in order, numbered from 0)"),
    (edited("steps.3.seq", 4), "steps[3].seq must be 3"),
    (edited("steps.0.seq", False), "steps[0].seq must be 0"),
    (edited("steps.0.seq", "0"), "steps[0].seq must be 0"),
    (edited("steps.0.seq", "-"), "steps[0].seq is missing"),
    (edited("steps.0.kind", "bogus"), "steps[0].kind must be one of activity, child, timer"),
    (edited("steps.0.name", None), "steps[0].name must be text of at most 1000 characters"),
    (edited("steps.0.name", "n" * 1001), "steps[0].name must be text"),
    (edited("steps.0.status", "done"), "steps[0].status must be one of scheduled, completed"),
    (edited("steps.0.result", "-"), "steps[0].result is missing"),
    (edited("steps.1.error", "boom"), "steps[1].error must be an object or null, got 'boom'"),
    (edited("steps.1.error", "-"), "steps[1].error is missing"),
    (edited("steps.0.delivered_in", -1), "steps[0].delivered_in must be a whole number from 0"),
    (edited("steps.0.delivered_in", 2**31), "steps[0].delivered_in must be a whole number"),
    (edited("steps.0.delivered_in", 1.5), "steps[0].delivered_in must be a whole number"),
    (edited("steps.0.delivered_in", "-"), "steps[0].delivered_in is missing"),
    (edited("steps.2.result", "2"), "steps[2].result must be a whole number"),
    (edited("steps.2.result", True), "steps[2].result must be a whole number"),
    (edited("steps.2.result", 2**70), "steps[2].result must be a whole number"),
    (edited("steps.2.status", "failed"), "steps[2].status must be completed (a version marker)"),
]


@pytest.mark.parametrize(("document", "message"), BAD_DOCUMENTS)
def test_a_malformed_history_fails_naming_the_field(document: Any, message: str) -> None:
    with pytest.raises(HistoryFormatError) as caught:
        testing.replay(document)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text and len(text) < 400
    with pytest.raises(HistoryFormatError):
        testing.read_history(document)


BAD_FILES: list[tuple[bytes, str]] = [
    (b"", "not a history: invalid JSON: Expecting value"),
    (b"{", "not a history: invalid JSON"),
    (b'{"format": "workflows.history", "version": NaN}', "invalid JSON: NaN is not JSON"),
    (b'{"version": -Infinity}', "invalid JSON: -Infinity is not JSON"),
    (b'{"format": "workflows.history\xff"}', "invalid JSON"),
    (b'{"version": 1' + b"0" * 5000 + b"}", "invalid JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    (b'"workflows.history"', "a history is a JSON object, got str"),
    (b"null", "a history is a JSON object, got NoneType"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_a_file_that_is_not_a_history_fails_in_one_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "order.json"
    path.write_bytes(content)
    with pytest.raises(HistoryFormatError) as caught:
        testing.replay(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_files_that_cannot_be_read_or_are_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path, message in (
        (tmp_path / "absent.json", "cannot read the history file: No such file or directory"),
        (tmp_path, "cannot read the history file: Is a directory"),
        (str(tmp_path / "a\x00b.json"), "cannot read the history file: its path holds a NUL"),
        ("x" * 5000, "cannot read the history file: File name too long"),
    ):
        with pytest.raises(HistoryFormatError, match=message):
            testing.read_history(path)
    for source in (7, b"{}", None, ["order.json"]):
        with pytest.raises(HistoryFormatError, match="a history is a dict or the path"):
            testing.replay(source)  # type: ignore[arg-type]
    # The read is bounded, not trusted to a size: /dev/zero says it holds nothing.
    monkeypatch.setattr(histories, "MAX_HISTORY_BYTES", 4096)
    big = tmp_path / "big.json"
    big.write_text(json.dumps(history()) + " " * 4096)
    for path in (big, Path("/dev/zero")):
        with pytest.raises(HistoryFormatError, match="larger than 4096 bytes"):
            testing.read_history(path)
    small = tmp_path / "small.json"
    small.write_text(json.dumps(history()))
    assert testing.replay(small).outcome == "blocked"


def test_code_that_cannot_take_the_history_fails_clearly() -> None:
    unknown = edited("workflow.name", "nowhere_app:order")
    with pytest.raises(ConfigurationError, match="no @workflow nowhere_app:order has been"):
        testing.replay(unknown)
    # Given the function, the recorded path is not needed to find it.
    assert testing.replay(unknown, app.order).outcome == "blocked"
    with pytest.raises(ConfigurationError, match="is a @activity, not a @workflow"):
        testing.replay(history(), app.charge)
    for fn in (len, "app:order", lambda: None):
        with pytest.raises(ConfigurationError, match="fn must be a @workflow function"):
            testing.replay(history(), fn)
    with pytest.raises(VersionError, match=r"version 5 of workflow .* but the code is version 1"):
        testing.replay(edited("workflow.version", 5))
    for field, value in (("workflow.args", ["o-1"]), ("workflow.kwargs", {"coupon": "x"})):
        with pytest.raises(NonDeterminismError, match="cannot be called with its recorded"):
            testing.replay(edited(field, value))
    # The engine's own verdicts, as a worker would record them.
    with pytest.raises(VersionError, match=r"get_version\('gift_wrap'\) recorded 7 at step 2"):
        testing.replay(edited("steps.2.result", 7))
    with pytest.raises(NonDeterminismError, match="at step 0: history holds a timer"):
        testing.replay(edited("steps.0.kind", "timer"))
    with pytest.raises(NonDeterminismError, match=r"history holds a wait for signal 'a\\nb'"):
        testing.replay(edited("steps.5.name", "a\nb"))


def test_what_the_code_does_on_recorded_values_against_what_history_says_it_did() -> None:
    # The charge as an older activity returned it: today's code reads a field it lacks.
    old_shape = edited("steps.0.result", "txn-1", status="completed")
    with pytest.raises(NonDeterminismError) as caught:
        testing.replay(old_shape)
    assert str(caught.value) == (
        f"workflow {app.order.path} completed in its history, but today's code fails "
        "replaying it: TypeError: string indices must be integers, not 'str'"
    )
    # A workflow that failed may fail again; one still waiting has not got there yet.
    old_shape["workflow"]["status"] = "failed"
    assert testing.replay(old_shape).outcome == "failed"
    assert testing.replay(edited("steps.0.result", "txn-1")).outcome == "blocked"
    # Steps past the end of a history are what the code would do next: allowed.
    cut = history("completed")
    del cut["steps"][5]
    replayed = testing.replay(cut)
    assert (replayed.outcome, replayed.new_steps) == ("blocked", 1)
    # Ending before its history does is a divergence, whatever the status says.
    longer = history("completed")
    longer["steps"].append(step(6, "timer", "", "completed", delivered_in=6))
    with pytest.raises(NonDeterminismError, match="completed after 6 steps but its history"):
        testing.replay(longer)


async def marks_what_it_was_handed(order_id: str, amount: float, *, pause: float = 0) -> Any:
    charged = await app.charge.run(order_id, amount)
    charged["seen"] = True
    return charged


def test_code_that_changes_a_recorded_value_leaves_the_history_as_it_was() -> None:
    data = history()
    del data["steps"][1:]
    before = copy.deepcopy(data)
    for _ in range(2):
        replayed = testing.replay(data, marks_what_it_was_handed)
        assert replayed.result == {"transaction_id": "t", "seen": True}
    assert data == before
