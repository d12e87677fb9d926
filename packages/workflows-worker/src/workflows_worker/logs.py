"""What a worker's log records carry besides their message: the structured fields.

Every record of a worker's own loggers (``workflows_worker.<module>``, see :func:`get_logger`)
gets the fields bound in its task's context: ``worker_id`` for the whole worker (bound by
``Worker.run``), and ``execution_id``, ``kind``, ``execution_name``, ``queue``, ``attempt``
for the run of one execution (bound by the executor in the execution's task). A call site about an
execution other than its task's own (a batch written by the pump, a workflow resumed by an
activity's outcome) passes that execution's fields with ``extra=``; those win over the bound
ones. A handler's formatter decides what to print: the JSON format prints every field, the
text format only the message (see ``workflows_cli.logs``).

The function's name is the record attribute ``execution_name``: ``name`` is the logger's on
every ``LogRecord`` (``extra`` may not overwrite it); the JSON format prints it as ``name``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

from workflows.records import Claimed

__all__ = [
    "CONTEXT_FIELDS",
    "FIELDS",
    "bind_execution",
    "bound",
    "execution_fields",
    "get_logger",
    "unbind",
]

# The structured fields a worker's records may carry, in the order a JSON line shows them.
FIELDS: tuple[str, ...] = (
    "worker_id",
    "execution_id",
    "kind",
    "execution_name",
    "queue",
    "attempt",
    "duration",
)

# Read-only (a new mapping is set on each bind), so one shared empty default is safe.
_NONE: Mapping[str, Any] = MappingProxyType({})
_bound: ContextVar[Mapping[str, Any]] = ContextVar("workflows_worker_log_fields", default=_NONE)


class _ContextFields(logging.Filter):
    """Adds the fields bound in the logging task's context to a record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _bound.get().items():
            if key not in record.__dict__:
                record.__dict__[key] = value
        return True


# Also added by `currant worker` to its handler, so records of other packages' loggers
# (workflows_postgres's listener, say) logged in a worker's tasks carry its fields too.
CONTEXT_FIELDS: logging.Filter = _ContextFields()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the context's fields added to its records.

    On the logger, not on a handler: the application's own handlers (or pytest's) see the
    fields too, whatever handlers it set up.
    """
    logger = logging.getLogger(name)
    if CONTEXT_FIELDS not in logger.filters:
        logger.addFilter(CONTEXT_FIELDS)
    return logger


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged in this context (and tasks started from it)
    until the block ends."""
    token = _bound.set({**_bound.get(), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def bind_execution(c: Claimed) -> Token[Mapping[str, Any]]:
    """``bound(**execution_fields(c))`` without the generator and the keyword dicts (once per
    execution, in its task): undo it with :func:`unbind`."""
    fields = dict(_bound.get())
    fields["execution_id"] = c.id
    fields["kind"] = c.kind
    fields["execution_name"] = c.name
    fields["queue"] = c.queue
    fields["attempt"] = c.attempts
    return _bound.set(fields)


def unbind(token: Token[Mapping[str, Any]]) -> None:
    _bound.reset(token)


def execution_fields(c: Claimed, **more: Any) -> dict[str, Any]:
    """The fields of a record about ``c``, for ``extra=``."""
    return {
        "execution_id": c.id,
        "kind": c.kind,
        "execution_name": c.name,
        "queue": c.queue,
        "attempt": c.attempts,
        **more,
    }
