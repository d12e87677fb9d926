"""What a command's exit code says about why it failed, for scripts that retry or alert.

Every command maps the error it failed with through ``EXIT_CODES``; ``MEANINGS`` is what
``workflows --help`` and ``currant --help`` show.
"""

from __future__ import annotations

from workflows.errors import (
    AmbiguousIdError,
    ConfigurationError,
    DatabaseUnavailableError,
    ExecutionNotFoundError,
    NotRetryableError,
    ScheduleNotFoundError,
    SchemaNotReadyError,
    WorkflowNotFoundError,
    WorkflowsError,
)

EXIT_ERROR = 1
# click exits 2 on a usage error, so each code below has one of its own above it: a deploy
# script can migrate and retry on 3 alone.
EXIT_USAGE = 2
EXIT_NOT_MIGRATED = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5
# Found, but not in a state the command applies to (a retry of one that has not failed).
EXIT_WRONG_STATE = 6

# The first type the error is an instance of decides, so the more specific comes first.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (SchemaNotReadyError, EXIT_NOT_MIGRATED),
    # An id prefix that names several executions is an argument to fix, as click's own.
    (AmbiguousIdError, EXIT_USAGE),
    (WorkflowNotFoundError, EXIT_NOT_FOUND),
    (ExecutionNotFoundError, EXIT_NOT_FOUND),
    (ScheduleNotFoundError, EXIT_NOT_FOUND),
    (DatabaseUnavailableError, EXIT_UNAVAILABLE),
    (NotRetryableError, EXIT_WRONG_STATE),
    # Kept at 1: a bad setting has exited 1 from the start, and scripts may test for it.
    (ConfigurationError, EXIT_ERROR),
    (WorkflowsError, EXIT_ERROR),
)

MEANINGS: dict[int, str] = {
    EXIT_ERROR: "error (a bad setting, a missing privilege, a database or OS error)",
    EXIT_USAGE: "usage error (also: an id prefix that several executions start with)",
    EXIT_NOT_MIGRATED: "schema not migrated: run `workflows migrate`, then retry",
    EXIT_NOT_FOUND: "no such execution or schedule",
    EXIT_UNAVAILABLE: "database unreachable",
    EXIT_WRONG_STATE: "not in a state the command applies to (retry: not failed or cancelled)",
}

# click rewraps an epilog's paragraphs unless one starts with \b.
EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in MEANINGS.items())


def exit_code(exc: BaseException) -> int:
    """The exit code of a command that failed with ``exc``."""
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR
