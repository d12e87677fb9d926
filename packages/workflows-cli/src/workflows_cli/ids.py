"""Execution ids as a person types them: a full id, or a unique prefix of one."""

from __future__ import annotations


def full_id(text: str) -> str:
    """The full id of the execution ``text`` names (a full id as it is, or a unique prefix of
    at least 4 hex digits, hyphens allowed); ``ExecutionNotFoundError`` or ``AmbiguousIdError``
    (through ``clean_errors``: one line on stderr, exit code 4 or 2) otherwise."""
    from workflows import executions

    return executions.resolve_sync(text)
