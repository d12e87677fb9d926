"""Exceptions raised by the public API."""

from __future__ import annotations

from typing import Any


def preview(value: Any) -> str:
    """A short repr for messages: a hostile value may be megabytes long, or have no repr."""
    try:
        text = repr(value)
    except Exception:
        # An int past sys.get_int_max_str_digits() has none, nor has a broken __repr__.
        return f"a value of type {type(value).__name__}"
    return text if len(text) <= 100 else f"{text[:100]}... ({len(text)} characters)"


class WorkflowsError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigurationError(WorkflowsError):
    """A ``WORKFLOWS_*`` setting or a decorator argument is invalid.

    Also every bad call option (``.options()``, ``sleep``, ``wait_for_signal``, ``get_version``,
    a signal's name): raised before anything reaches the database.
    """


class SerializationError(WorkflowsError, TypeError):
    """A value cannot be stored as JSON (or is larger than ``WORKFLOWS_MAX_PAYLOAD_BYTES``).

    That includes U+0000, lone surrogates and nesting deeper than ``codec.MAX_DEPTH`` levels.
    """


class SchemaNotReadyError(WorkflowsError):
    """The database has not been migrated to the schema this code needs."""


class DatabaseUnavailableError(WorkflowsError):
    """The database cannot be reached with the configured URL."""


class PermissionDeniedError(WorkflowsError, PermissionError):
    """The database role lacks a privilege the operation needs (for ``migrate``: to create
    or change the schema)."""


class ExecutionNotFoundError(WorkflowsError, LookupError):
    """No execution has that id."""


class SignalError(WorkflowsError):
    """A signal cannot be delivered (unknown or finished workflow, or not a workflow)."""


class WorkflowNotFoundError(ExecutionNotFoundError, SignalError):
    """No workflow has that id (or the id is not one): what ``send_signal`` raises for every
    kind of missing workflow. Both an ``ExecutionNotFoundError`` and a ``SignalError``."""


class ScheduleNotFoundError(WorkflowsError, LookupError):
    """No schedule has that name."""


class NonDeterminismError(WorkflowsError):
    """Replayed workflow code asked for a different step than its history recorded."""


class VersionError(WorkflowsError):
    """A recorded ``get_version`` value is outside the range the code supports."""


class WorkflowTimeoutError(WorkflowsError, TimeoutError):
    """A workflow ran past its deadline."""


class SignalTimeoutError(WorkflowsError, TimeoutError):
    """``wait_for_signal`` gave up after its timeout."""


class ExecutionCancelledError(WorkflowsError):
    """The execution was cancelled."""


class ExecutionFailedError(WorkflowsError):
    """``get_result`` on an execution that failed: carries its recorded error."""

    def __init__(self, execution_id: str, error: dict[str, Any] | None) -> None:
        self.execution_id = execution_id
        self.error = error or {}
        self.type: str = self.error.get("type", "Error")
        self.message: str = self.error.get("message", "")
        super().__init__(f"execution {execution_id} failed: {self.type}: {self.message}")


class ActivityError(WorkflowsError):
    """An activity (or child workflow) failed for good; raised inside the calling workflow."""

    def __init__(self, name: str, error: dict[str, Any] | None) -> None:
        self.name = name
        self.error = error or {}
        self.type: str = self.error.get("type", "Error")
        self.message: str = self.error.get("message", "")
        super().__init__(f"{name} failed: {self.type}: {self.message}")


class ChildWorkflowError(ActivityError):
    """A child workflow failed for good; raised inside the parent workflow."""


class NotRetryableError(WorkflowsError):
    """``retry`` of an execution that cannot be retried now: not failed or cancelled (pending,
    running, waiting, completed), a step of a workflow (retry the workflow: it runs the step
    again), or a workflow something under which is still being stopped."""


class AmbiguousIdError(WorkflowsError, LookupError):
    """An id prefix that more than one execution starts with: give more of the id.

    ``prefix`` is what was given, ``candidates`` a couple of the ids it matches."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        self.prefix = prefix
        self.candidates = candidates
        super().__init__(
            f"id prefix {prefix!r} is ambiguous: it matches {' and '.join(candidates)}"
            f"{' and maybe more' if len(candidates) > 1 else ''}; give more of the id"
        )
