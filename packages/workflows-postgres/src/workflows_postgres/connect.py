"""Opening connections, with errors that name the server but never a password."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from workflows.config import Settings
from workflows.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    import psycopg


def redact(dsn: str) -> str:
    """The DSN with any password replaced, for messages and logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable database URL>"
    if parts.scheme not in ("postgres", "postgresql"):
        # key=value form: drop the password pair.
        return re.sub(r"password\s*=\s*\S+", "password=***", dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(f"cannot connect to {redact(dsn)}: {first_line(exc)}")


def resolve_dsn(settings: Settings | None = None) -> str:
    """``WORKFLOWS_DATABASE_URL``, else the embedded default database (started on first use)."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return settings.database_url
    from workflows_postgres import embedded

    return embedded.ensure_running(settings.data_dir)


def connect_sync(dsn: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, **kwargs)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise unavailable(dsn, exc) from None
