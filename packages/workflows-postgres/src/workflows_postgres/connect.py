"""Opening connections, with errors that name the server but never a password."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from workflows.config import Settings
from workflows.errors import DatabaseUnavailableError, PermissionDeniedError, WorkflowsError

if TYPE_CHECKING:
    import psycopg

# Any scheme (postgresql+asyncpg:// too). A key=value string whose password holds "://" is not
# one: the scheme must start the string.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A query parameter named password in any case: libpq reads only `password`, but a message
# must not show the one it refused either.
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
# What follows `password=` in a key=value string libpq cannot parse: all of it may be secret.
_KEYWORD_PASSWORD = re.compile(r"password\s*=\s*(.*)", re.IGNORECASE | re.DOTALL)


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, for messages and logs.

    Any ``scheme://`` URL, well-formed or not, and libpq's ``key=value`` strings; a string
    that is neither is not shown at all.
    """
    if _URL.match(dsn):
        scheme, _, rest = dsn.partition("://")
        userinfo, at, hostinfo = _split_credentials(rest)
        if at and ":" in userinfo:
            rest = userinfo.partition(":")[0] + ":***@" + hostinfo
        return scheme + "://" + _QUERY_PASSWORD.sub(r"\1***", rest)
    params = _conninfo(dsn)
    if params is None:
        return "<unparseable connection string>"
    if "password" not in params:
        return dsn
    from psycopg.conninfo import make_conninfo

    params["password"] = "***"
    return make_conninfo("", **params)


def scrub(message: str, dsn: str | None) -> str:
    """``message`` without ``dsn``'s password: the DSN itself shown redacted, and every other
    occurrence of the password (as written in the DSN or decoded) replaced by ``***``.

    For driver messages, which may quote the DSN or a piece of it (libpq's "missing "=" after
    "b"" when a password holds an unquoted space).
    """
    if not dsn:
        return message
    message = message.replace(dsn, redact(dsn))
    exact, guessed = _passwords(dsn)
    for secret in exact:
        message = message.replace(secret, "***")
    for word in guessed:
        # Words of a string libpq could not read: one may be as short as "a", so only whole
        # words go, not every letter of the message.
        message = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", "***", message)
    return message


def _split_credentials(rest: str) -> tuple[str, str, str]:
    # The credentials end at the last "@": a password may hold an unencoded "@", "/", "?" or
    # "#" that a URL parser would take for the host or the path, and so show. An "@" in the
    # query makes this hide more than the password, never less.
    return rest.rpartition("@")


def _conninfo(dsn: str) -> dict[str, Any] | None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except (psycopg.Error, ValueError):
        return None


def _passwords(dsn: str) -> tuple[list[str], list[str]]:
    """The password of ``dsn`` in every form a message may quote it (longest first), and the
    words that may be part of it when ``dsn`` cannot be parsed."""
    exact: set[str] = set()
    guessed: set[str] = set()
    if _URL.match(dsn):
        userinfo, at, _ = _split_credentials(dsn.partition("://")[2])
        if at and ":" in userinfo:
            exact.add(userinfo.partition(":")[2])
        exact.update(match[2] for match in _QUERY_PASSWORD.finditer(dsn))
    else:
        params = _conninfo(dsn)
        if params is not None:
            exact.add(str(params.get("password") or ""))
        else:
            tail = _KEYWORD_PASSWORD.search(dsn)
            if tail:
                exact.add(tail[1].strip())
                guessed.update(word.strip("'\"") for word in tail[1].split())
    exact |= {unquote(secret) for secret in exact}
    exact.discard("")
    guessed.discard("")
    return sorted(exact, key=len, reverse=True), sorted(guessed - exact, key=len, reverse=True)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"cannot connect to {redact(dsn)}: {scrub(first_line(exc), dsn)}"
    )


@contextlib.contextmanager
def sync_errors(dsn: str, doing: str) -> Iterator[None]:
    """psycopg errors raised inside as this library's, in one line without a password.

    A missing privilege as ``PermissionDeniedError``, a refused or lost connection as
    ``DatabaseUnavailableError``, any other as ``WorkflowsError``; ``doing`` (what failed)
    starts the message.
    """
    import psycopg

    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermissionDeniedError(f"{doing}: {scrub(first_line(exc), dsn)}") from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise DatabaseUnavailableError(f"{doing}: {scrub(first_line(exc), dsn)}") from None
    except psycopg.Error as exc:
        raise WorkflowsError(f"{doing}: {scrub(first_line(exc), dsn)}") from None


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
