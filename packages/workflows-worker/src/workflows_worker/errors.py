"""The worker's own error: an outcome the database would not store; and how errors are logged."""

from __future__ import annotations

from typing import Any


class UnstorableOutcomeError(Exception):
    """The database refused one item of a batched write (a value it cannot hold)."""


def unstorable(exc: BaseException) -> dict[str, Any]:
    """The clean error an execution fails with when the database refused its outcome."""
    # ASCII: the message itself must be storable in whatever encoding refused the value.
    detail = first_line(exc).encode("ascii", "backslashreplace").decode("ascii")[:500]
    return {
        "type": "UnstorableOutcome",
        "message": f"the database refused to store this execution's outcome: {detail}",
    }


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
