"""One line on stderr and an exit code for what a command failed with, not a traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from workflows.errors import WorkflowsError
from workflows_cli.exit_codes import exit_code

F = TypeVar("F", bound=Callable[..., Any])


def clean_errors(fn: F) -> F:
    """One line on stderr and a non-zero exit (see ``exit_codes``) instead of a traceback.

    This library's errors, the database drivers' (a missing privilege, a lost connection) and
    the operating system's (a port in use); anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WorkflowsError as exc:
            _fail(str(exc), exit_code(exc))
        except Exception as exc:
            message = _outside_error(exc)
            if message is None:
                raise
            _fail(message, exit_code(exc))

    return wrapper  # type: ignore[return-value]


def _outside_error(exc: Exception) -> str | None:
    """A driver's or the OS's error as a message, None for anything else."""
    import asyncpg
    import psycopg

    if isinstance(exc, psycopg.Error | asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"database error: {exc}"
    if isinstance(exc, OSError):
        return str(exc) or type(exc).__name__
    return None


def _fail(message: str, code: int) -> NoReturn:
    from workflows_postgres.connect import scrub

    # Drivers' messages may hold a DETAIL or HINT line, or quote the connection string.
    line = " ".join(part.strip() for part in message.strip().splitlines()) or "failed"
    click.echo(f"error: {scrub(line, os.environ.get('WORKFLOWS_DATABASE_URL'))}", err=True)
    sys.exit(code)
