"""Workflow histories as files: exported from the database, read back, and replayed against
today's code with the pure engine a worker runs (no database, no worker).

    history = await workflows.testing.export_history(workflow_id)   # or `workflows history export`
    Path("tests/histories/order.json").write_text(json.dumps(history, indent=2))

    workflows.testing.replay("tests/histories/order.json")   # NonDeterminismError on divergence

The file's format is documented in docs/history-format.md: a JSON object with ``"format":
"workflows.history"`` and ``"version": 1``, the workflow (its function's path, version,
arguments, status) and its steps in order, as ``workflow_steps`` holds them. Replay checks what a
worker running today's code would: each recorded step is asked for again at its position, with
its kind and name (``get_version`` markers included); the code does not end before its history
does; and it does not fail on the recorded values where its history went on.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from workflows import codec
from workflows.api import REGISTRY, Function
from workflows.config import Settings
from workflows.errors import (
    ConfigurationError,
    ExecutionNotFoundError,
    NonDeterminismError,
    VersionError,
    WorkflowNotFoundError,
    WorkflowsError,
    preview,
)
from workflows.executions import iso_utc, resolve, resolve_sync
from workflows.history import StepRecord
from workflows.replay import WorkflowInstance
from workflows.states import Status, StepKind, StepStatus
from workflows.store import async_store, sync_store

__all__ = [
    "HISTORY_FORMAT",
    "HISTORY_FORMAT_VERSION",
    "MAX_HISTORY_BYTES",
    "HistoryFormatError",
    "Replayed",
    "export_history",
    "export_history_sync",
    "read_history",
    "replay",
]

HISTORY_FORMAT = "workflows.history"
HISTORY_FORMAT_VERSION = 1
#: The largest history file read: the export is one value of one row, which PostgreSQL caps at
#: 1 GB, so a larger file is no export (and would only take the memory).
MAX_HISTORY_BYTES = 1 << 30
# Function paths, signal names, change ids: what a message may quote. The API refuses longer
# signal names and change ids (255); a function path of 1,000 characters is no real one.
_MAX_NAME_CHARS = 1000
_MAX_ID_CHARS = 100
_MAX_INT32 = 2**31 - 1
_ACTIVE = frozenset({Status.PENDING, Status.RUNNING, Status.WAITING})

HistorySource = Mapping[str, Any] | str | os.PathLike[str]
WorkflowCode = Callable[..., Coroutine[Any, Any, Any]]


class HistoryFormatError(WorkflowsError, ValueError):
    """A history (a file or a dict) that is not one this code reads: not JSON, not of the
    ``workflows.history`` format, of another version, or with a field missing or of the wrong
    type. The message names the field (``steps[3].kind``)."""


@dataclass(frozen=True)
class Replayed:
    """One history that today's code replayed.

    ``outcome`` is where the code got to on it: ``blocked`` (waiting for a step, as a running
    workflow does), ``completed`` or ``failed``; ``new_steps`` counts the steps it asked for
    past the end of the history (what it would do next); ``result`` is what the code returned
    (``completed``) and ``error`` what it raised (``failed``), as a worker would store it.
    """

    workflow_id: str | None
    name: str
    status: str
    steps: int
    outcome: Literal["blocked", "completed", "failed"]
    new_steps: int
    result: Any = None
    error: dict[str, Any] | None = None


# ---- export ------------------------------------------------------------------------------------


async def export_history(workflow_id: str) -> dict[str, Any]:
    """A workflow's history as ``workflows history export`` writes it (a JSON-ready dict, see
    docs/history-format.md). ``workflow_id`` may be a unique prefix. ``ExecutionNotFoundError``
    for an unknown id, ``WorkflowNotFoundError`` for a job's or an activity's."""
    full = await resolve(workflow_id)
    rows = await async_store(Settings.current()).control("history_export", (full,))
    return _document(full, rows)


def export_history_sync(workflow_id: str) -> dict[str, Any]:
    full = resolve_sync(workflow_id)
    rows = sync_store(Settings.current()).control("history_export", (full,))
    return _document(full, rows)


def _document(full: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        raise ExecutionNotFoundError(f"no execution {full}")
    row = rows[0]
    if row["kind"] != "workflow":
        raise WorkflowNotFoundError(
            f"{row['kind']} {full} is not a workflow: only a workflow has a history to export"
        )
    # Payloads as inspection shows them: unwrapped if this process's codec can, typed values
    # in their tagged JSON form (replay() decodes them with the codec).
    view = codec.current().view
    call = view(codec.decode(row["args"]))
    if codec.wrapped_scheme(call) is not None:
        raise HistoryFormatError(
            f"workflow {full}: its payloads are encrypted ({codec.wrapped_scheme(call)}) and "
            "this process's codec cannot read them: export with the workers' codec"
        )
    if not (
        isinstance(call, dict)
        and isinstance(call.get("args", []), list)
        and isinstance(call.get("kwargs", {}), dict)
    ):
        # Written by hand (a worker fails such a workflow as it starts): nothing to replay.
        raise HistoryFormatError(f"workflow {full} has no arguments a worker could call it with")
    return {
        "format": HISTORY_FORMAT,
        "version": HISTORY_FORMAT_VERSION,
        "exported_at": iso_utc(row["exported_at"]),
        "workflow": {
            "id": row["id"],
            "name": row["name"],
            "version": row["version"],
            "queue": row["queue"],
            "status": row["status"],
            "attempts": row["attempts"],
            "parent_id": row["parent_id"],
            "args": call.get("args", []),
            "kwargs": call.get("kwargs", {}),
            "result": view(codec.decode(row["result"])),
            "error": codec.decode(row["error"]),
            "created_at": iso_utc(row["created_at"]),
            "started_at": iso_utc(row["started_at"]),
            "finished_at": iso_utc(row["finished_at"]),
        },
        "steps": [
            {**step, "result": view(step.get("result"))}
            for step in codec.decode(row["steps"]) or []
        ],
        "signals": [
            {**signal, "payload": view(signal.get("payload"))}
            for signal in codec.decode(row["signals"]) or []
        ],
    }


# ---- reading -----------------------------------------------------------------------------------


def read_history(source: HistorySource) -> dict[str, Any]:
    """A history checked against the format: ``source`` is the dict ``export_history`` returns
    (or ``json.load`` of a file) or the path of a JSON file. Returns the dict;
    :class:`HistoryFormatError`, naming the field, for anything else."""
    if isinstance(source, Mapping):
        data: Any = source
    elif isinstance(source, str | os.PathLike):
        data = _parse(_read(source))
    else:
        raise HistoryFormatError(
            f"a history is a dict or the path of a JSON file, got {type(source).__name__}"
        )
    _check(data)
    return dict(data)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as file:
            # A bounded read, not a stat: a pipe or /dev/zero has no size to trust.
            data = file.read(MAX_HISTORY_BYTES + 1)
    except OSError as exc:
        raise HistoryFormatError(
            f"cannot read the history file: {exc.strerror or type(exc).__name__}"
        ) from None
    except ValueError:
        raise HistoryFormatError("cannot read the history file: its path holds a NUL") from None
    if len(data) > MAX_HISTORY_BYTES:
        raise HistoryFormatError(
            f"the history file is larger than {MAX_HISTORY_BYTES} bytes: no export is"
        )
    return data


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse(data: bytes) -> Any:
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise HistoryFormatError("not a history: its JSON is nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError, an integer past sys.get_int_max_str_digits().
        detail = codec.safe_str(exc, limit=200)
        raise HistoryFormatError(f"not a history: invalid JSON: {detail}") from None


def _shown(value: Any) -> str:
    """A value for a message, without the repr of a whole hostile megabyte."""
    if isinstance(value, str) and len(value) > 100:
        return f"{value[:100]!r}... ({len(value)} characters)"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, Mapping):
        return f"an object of {len(value)} fields"
    return preview(value)


def _fail(where: str, expected: str, value: Any) -> NoReturn:
    raise HistoryFormatError(f"{where} must be {expected}, got {_shown(value)}")


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise HistoryFormatError(f"{where}{key} is missing")
    return obj[key]


def _text(value: Any, where: str, *, limit: int, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > limit or (not value and not empty):
        what = "text" if empty else "non-empty text"
        _fail(where, f"{what} of at most {limit} characters", value)
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    # bool is an int to Python, not to JSON.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(where, f"a whole number from {low} to {high}", value)
    return value


def _choice(value: Any, where: str, allowed: list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        _fail(where, f"one of {', '.join(allowed)}", value)
    return value


def _check(data: Any) -> None:
    if not isinstance(data, Mapping):
        raise HistoryFormatError(f"a history is a JSON object, got {type(data).__name__}")
    form = data.get("format")
    if form != HISTORY_FORMAT:
        got = "no format field" if form is None else f"format {_shown(form)}"
        raise HistoryFormatError(f"not a workflow history: {got}, not {HISTORY_FORMAT!r}")
    version = _field(data, "version", "")
    if isinstance(version, bool) or not isinstance(version, int):
        _fail("version", "a whole number", version)
    if version != HISTORY_FORMAT_VERSION:
        newer = " is newer than this code reads: upgrade workflows" if version > 1 else ""
        raise HistoryFormatError(
            f"history format version {_shown(version)}{newer} "
            f"(this code reads version {HISTORY_FORMAT_VERSION})"
        )
    workflow = _field(data, "workflow", "")
    if not isinstance(workflow, Mapping):
        _fail("workflow", "an object", workflow)
    name = _text(_field(workflow, "name", "workflow."), "workflow.name", limit=_MAX_NAME_CHARS)
    if ":" not in name:
        _fail("workflow.name", "a function path, module:name", name)
    if not isinstance(_field(workflow, "args", "workflow."), list):
        _fail("workflow.args", "an array", workflow["args"])
    kwargs = _field(workflow, "kwargs", "workflow.")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        _fail("workflow.kwargs", "an object", kwargs)
    _choice(_field(workflow, "status", "workflow."), "workflow.status", [s.value for s in Status])
    recorded_version = _field(workflow, "version", "workflow.")
    if recorded_version is not None:
        _int(recorded_version, "workflow.version", 1, _MAX_INT32)
    ident = workflow.get("id")
    if ident is not None:
        _text(ident, "workflow.id", limit=_MAX_ID_CHARS)
    steps = _field(data, "steps", "")
    if not isinstance(steps, list):
        _fail("steps", "an array", steps)
    for position, step in enumerate(steps):
        _check_step(step, position)


def _check_step(step: Any, position: int) -> None:
    where = f"steps[{position}]"
    if not isinstance(step, Mapping):
        _fail(where, "an object", step)
    seq = _field(step, "seq", f"{where}.")
    if isinstance(seq, bool) or seq != position:
        # The engine numbers steps from 0 as the code asks for them: a gap or a repeat is a
        # file edited by hand, which would otherwise pass as the code's divergence.
        _fail(f"{where}.seq", f"{position} (steps are in order, numbered from 0)", seq)
    kind = _choice(_field(step, "kind", f"{where}."), f"{where}.kind", [k.value for k in StepKind])
    _text(_field(step, "name", f"{where}."), f"{where}.name", limit=_MAX_NAME_CHARS, empty=True)
    status = _choice(
        _field(step, "status", f"{where}."), f"{where}.status", [s.value for s in StepStatus]
    )
    result = _field(step, "result", f"{where}.")
    error = _field(step, "error", f"{where}.")
    if error is not None and not isinstance(error, Mapping):
        _fail(f"{where}.error", "an object or null", error)
    delivered = _field(step, "delivered_in", f"{where}.")
    if delivered is not None:
        _int(delivered, f"{where}.delivered_in", 0, _MAX_INT32)
    if kind == StepKind.VERSION:
        if status != StepStatus.COMPLETED:
            _fail(f"{where}.status", "completed (a version marker)", status)
        _int(result, f"{where}.result", -(2**63), 2**63 - 1)


def _record(step: Mapping[str, Any], payloads: codec.JsonCodec) -> StepRecord:
    # Copies, as a worker decodes each value afresh: code that changes a value it was handed
    # must not change the history (replayed again, or compared by the caller). Decoded by the
    # process's codec, as a worker does (typed values, wrapped ones).
    result = copy.deepcopy(step["result"])
    if step["kind"] != "version":
        result = payloads.decode_stored(result)
    return StepRecord(
        seq=step["seq"],
        kind=step["kind"],
        name=step["name"],
        status=step["status"],
        result=result,
        error=None if step["error"] is None else copy.deepcopy(dict(step["error"])),
        delivered_in=step["delivered_in"],
    )


# ---- replay ------------------------------------------------------------------------------------


def replay(history: HistorySource, fn: Any = None) -> Replayed:
    """Replay a recorded history against today's code with the pure engine (no database).

    ``history``: a dict (:func:`export_history`) or the path of a file (``workflows history
    export``). ``fn``: the ``@workflow`` to run; by default the one registered under the
    recorded path, so its module must have been imported (``workflows replay -A app`` does).

    Raises :class:`~workflows.errors.NonDeterminismError` with the engine's message (the step,
    what history holds, what the code asked for) when the code diverges, and when it fails on
    the recorded values where its history went on (the message names the exception);
    :class:`~workflows.errors.VersionError` for a ``get_version`` value outside the range the
    code supports, or a history written by a newer version of the workflow than the code's;
    :class:`HistoryFormatError` for a history that is not one.
    """
    data = read_history(history)
    workflow = data["workflow"]
    name: str = workflow["name"]
    code, version = _code(name, fn)
    recorded_version = workflow["version"]
    if version is not None and recorded_version is not None and recorded_version > version:
        raise VersionError(
            f"version {recorded_version} of workflow {name} wrote this history, but the code "
            f"is version {version}: a worker running it leaves such workflows to newer ones"
        )
    payloads = codec.current()
    steps = [_record(step, payloads) for step in data["steps"]]
    try:
        instance, activation = WorkflowInstance.replay(
            code,
            payloads.decode_stored(copy.deepcopy(workflow["args"])),
            payloads.decode_stored(copy.deepcopy(dict(workflow["kwargs"]))),
            steps,
            name=name,
            max_payload_bytes=Settings.current().max_payload_bytes,
            # workflows.random() and uuid4() draw what they drew live (seeded by the id).
            seed=str(workflow.get("id") or ""),
        )
    except Exception as exc:
        # Calling the function: arguments that no longer fit its signature.
        raise NonDeterminismError(
            f"workflow {name} cannot be called with its recorded arguments: {_described(exc)}"
        ) from None
    try:
        status: str = workflow["status"]
        if activation.status == "failed":
            _check_failure(name, status, activation.error or {}, steps)
        return Replayed(
            workflow_id=workflow.get("id"),
            name=name,
            status=status,
            steps=len(steps),
            outcome=activation.status,
            new_steps=len(activation.commands),
            result=activation.result,
            error=activation.error,
        )
    finally:
        instance.close()


def _check_failure(
    name: str, status: str, error: Mapping[str, Any], steps: list[StepRecord]
) -> None:
    kind, message = error.get("type"), codec.safe_str(error.get("message", ""))
    # The engine's own verdicts, raised as the worker would record them.
    if kind == NonDeterminismError.__name__:
        raise NonDeterminismError(message)
    if kind == VersionError.__name__:
        raise VersionError(message)
    if status in (Status.FAILED, Status.CANCELLED):
        return
    # A running workflow whose every resolution was handed over stopped at this very point, on
    # these values: code that now fails on them fails it when it next resumes. One with new
    # resolutions may fail on those: that is the next activation's to decide.
    undelivered = any(s.resolved and s.delivered_in is None for s in steps)
    if status == Status.COMPLETED or (status in _ACTIVE and steps and not undelivered):
        where = "completed" if status == Status.COMPLETED else f"is {status} at this point"
        raise NonDeterminismError(
            f"workflow {name} {where} in its history, but today's code fails replaying it: "
            f"{kind}: {message}"
        )


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {codec.safe_str(exc)}"


def _code(name: str, fn: Any) -> tuple[WorkflowCode, int | None]:
    """The coroutine function to replay and its ``@workflow`` version (None: not decorated)."""
    if fn is None:
        fn = REGISTRY.get(name)
        if fn is None:
            raise ConfigurationError(
                f"no @workflow {name} has been imported here: import the module that defines "
                "it (`workflows replay -A module`), or pass fn="
            )
    if isinstance(fn, Function):
        if fn.kind != "workflow":
            raise ConfigurationError(f"{fn.path} is a @{fn.kind}, not a @workflow")
        return fn.fn, fn.version
    if inspect.iscoroutinefunction(fn):
        return fn, None
    raise ConfigurationError(
        f"fn must be a @workflow function (or an async def), got {preview(fn)}"
    )
