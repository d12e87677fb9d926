"""One statement on a psycopg connection's libpq handle (``psycopg.pq``): the blocking
producer's ``f.queue_sync(x)``.

psycopg's cursor spends about 17 µs of the caller's CPU per call on this machine over what
libpq itself needs (the query's conversion, the adaptation of each parameter, the result's
row), a fifth of a sync enqueue's client CPU. A plain call's parameters are the same every
time but for its arguments' JSON, so they are made into text once (``text_params``) and sent
as they are. Only success is read here: an error result makes the caller run the statement
again through the cursor, which raises what psycopg raises (a failed statement in autocommit
has committed nothing).
"""

from __future__ import annotations

import math
import select
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import pq

TextParam = bytes | None

_TUPLES_OK = pq.ExecStatus.TUPLES_OK


def _text(value: Any) -> TextParam:
    """``value`` as PostgreSQL's text input reads it; a ValueError when it has no such form
    here (the caller keeps to the cursor)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        if math.isnan(value):
            return b"NaN"
        if math.isinf(value):
            return b"Infinity" if value > 0 else b"-Infinity"
        return repr(value).encode()
    if isinstance(value, str):
        # libpq sends a text parameter up to its first NUL: the value would be cut short.
        if "\x00" in value:
            raise ValueError("a NUL character")
        return value.encode()
    raise ValueError(f"no text form for {type(value).__name__}")


def text_params(values: Sequence[Any]) -> tuple[TextParam, ...] | None:
    """``values`` as UTF-8 text parameters, or None when one has no such form."""
    try:
        return tuple(_text(v) for v in values)
    except ValueError:
        return None


def _wait_readable(fd: int) -> None:
    if hasattr(select, "poll"):
        # poll, not select(): select() refuses a descriptor past FD_SETSIZE (1024), which a
        # busy application's connection may well have.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll()
    else:  # pragma: no cover - Windows
        select.select([fd], [], [])


def exchange(
    pgconn: pq.abc.PGconn, send: Callable[[], None], ok: pq.ExecStatus = _TUPLES_OK
) -> pq.abc.PGresult | None:
    """Send one statement (``send`` queues it on ``pgconn``) and wait for its result: the
    result when its status is ``ok``, None when it failed (the caller runs it again through
    psycopg, for psycopg's error). Raises psycopg.OperationalError when the
    connection fails; an interrupt (KeyboardInterrupt) while waiting leaves the statement
    running and the connection mid-statement: the caller cancels the one and closes the
    other."""
    send()
    fd = pgconn.socket
    # Large arguments may not fit the socket's buffer at once: libpq sends the rest as the
    # server reads (it may have to read the server's replies meanwhile to let it go on).
    while pgconn.flush():
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLOUT)
            events = poller.poll()
            if any(ev & select.POLLIN for _, ev in events):
                pgconn.consume_input()
        else:  # pragma: no cover - Windows
            readable, _, _ = select.select([fd], [fd], [])
            if readable:
                pgconn.consume_input()
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        _wait_readable(fd)
    result = None
    failed = False
    # One statement: one result, then None. Every result is read, to leave the connection
    # ready for the next statement.
    while (got := pgconn.get_result()) is not None:
        if got.status != ok:
            failed = True
        result = got
    return None if failed else result
