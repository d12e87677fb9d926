"""What a connection pooler between this process and PostgreSQL changes (``WORKFLOWS_POOLER``).

``none``: a direct connection, the settings of a session sent as startup parameters.

``transaction`` (PgBouncer ``pool_mode = transaction``, Supavisor's port 6543, Neon's
``-pooler`` endpoint, RDS Proxy): every transaction (every statement outside one) may run on
another server session, shared with other clients. So: no startup parameters (PgBouncer
refuses those it does not know, and a SET would outlive the client on a shared session); no
prepared statement kept across statements (asyncpg's cache off: its unnamed statement is
parsed and run within one Sync, which PgBouncer keeps on one server; psycopg never prepares);
no LISTEN (the results watcher polls). Producers only: a worker needs a session of its own
(LISTEN, session advisory locks), and so does ``migrate``.

``session`` (PgBouncer ``pool_mode = session``, Supavisor's port 5432): the client keeps its
server session until it disconnects, but PgBouncer still refuses unknown startup parameters:
the settings are sent as SET after connecting (PgBouncer's ``server_reset_query``, DISCARD ALL
by default, clears them before the session serves another client).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from workflows.config import Settings
from workflows.errors import ConfigurationError

TRANSACTION = "transaction"
SESSION = "session"


def set_statement(session: Mapping[str, str]) -> str:
    """``session`` as SET statements, for a pooler that refuses them as startup parameters."""
    # Names and values are this package's constants, never a caller's: quoted all the same.
    return "; ".join(
        f"SET {name} = '{value.replace(chr(39), chr(39) * 2)}'" for name, value in session.items()
    )


def asyncpg_options(pooler: str, session: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of ``asyncpg.connect``/``create_pool`` that give a connection
    ``session`` (the settings) through ``pooler``; see :func:`after_connect` for session mode."""
    if pooler == TRANSACTION:
        return {"statement_cache_size": 0}
    if pooler == SESSION:
        return {}
    return {"server_settings": dict(session)}


def after_connect(
    pooler: str, session: Mapping[str, str]
) -> Callable[[Any], Coroutine[Any, Any, None]] | None:
    """What to run on a new asyncpg connection through ``pooler`` (the pool's ``init``)."""
    if pooler != SESSION or not session:
        return None
    statement = set_statement(session)

    async def init(conn: Any) -> None:
        await conn.execute(statement)

    return init


async def connect(
    dsn: str,
    pooler: str,
    session: Mapping[str, str],
    *,
    application_name: str | None = None,
    **kwargs: Any,
) -> Any:
    """One asyncpg connection with ``session`` applied as ``pooler`` allows.

    ``application_name`` goes as a startup parameter whatever the pooler: PgBouncer knows it
    and sets it on whichever server session serves the client.
    """
    import asyncpg

    options = asyncpg_options(pooler, session)
    if application_name is not None:
        options["server_settings"] = options.get("server_settings", {}) | {
            "application_name": application_name
        }
    conn = await asyncpg.connect(dsn, **kwargs, **options)
    init = after_connect(pooler, session)
    if init is not None:
        try:
            await init(conn)
        except BaseException:
            conn.terminate()
            raise
    return conn


def psycopg_options(pooler: str) -> dict[str, Any]:
    """Keyword arguments of ``psycopg.connect`` for a connection of this package's own."""
    return {"prepare_threshold": None} if pooler == TRANSACTION else {}


def listens(settings: Settings) -> bool:
    """Whether LISTEN can be used: not through transaction pooling (the session it was sent on
    goes back to the pool, and serves others, after the statement)."""
    return settings.pooler != TRANSACTION


def require_session(settings: Settings, what: str, needs: str) -> None:
    """Refuse ``what`` (a worker, a migration) through transaction pooling: it ``needs`` a
    session (LISTEN, a session advisory lock)."""
    if settings.pooler == TRANSACTION:
        raise ConfigurationError(
            f"{what} cannot run through a transaction-mode pooler (WORKFLOWS_POOLER=transaction):"
            f" it needs a session of its own ({needs}). Give it a direct "
            "connection (WORKFLOWS_DATABASE_URL to PostgreSQL itself, WORKFLOWS_POOLER unset) "
            "or a session-mode pooler (WORKFLOWS_POOLER=session)"
        )
