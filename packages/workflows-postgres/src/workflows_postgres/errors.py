"""How the store tells the database's trouble from a value's (workflows.store.WorkerStore)."""

from __future__ import annotations

import asyncpg
import psycopg

from workflows.errors import DatabaseUnavailableError

# Lost to another transaction: the same statement again will do.
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

# The database or the connection, not the code that ran: the worker retries later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # What asyncpg raises for a pooled connection caught mid-query by a server shutdown
    # ("cannot switch to state 12; another operation (2) is in progress").
    asyncpg.InternalClientError,
    psycopg.Error,
    DatabaseUnavailableError,
)


def is_poison(exc: BaseException) -> bool:
    """Whether a failed write may be one item's doing rather than the database's state.

    Data exceptions (class 22: a character the database's encoding lacks, a value out of
    range), integrity (23) and program limits (54), or a value the driver cannot encode. Any
    other error (the connection, privileges, a shutdown) would fail every item alike.
    """
    if isinstance(exc, UnicodeError | OverflowError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23", "54")
