"""A plain ``f.queue_sync(x)`` sends its statement through libpq (workflows_postgres.pq_call):
it survives its prepared statement vanishing from the session, and an interrupt while it waits
leaves nothing enqueued and the next call working."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from workflows import job
from workflows_postgres import client


@job(queue="libpq")
async def sent(x: str) -> str:
    return x


class Interrupted(BaseException):
    """What a signal handler raises in the caller (as Ctrl-C's KeyboardInterrupt would)."""


@pytest.fixture
def admin(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def args_of(admin: psycopg.Connection[Any], execution_id: str) -> str | None:
    row = admin.execute(
        "SELECT args::text FROM workflows.executions WHERE id = %s", (execution_id,)
    ).fetchone()
    return None if row is None else row[0]


def count_of(admin: psycopg.Connection[Any], x: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM workflows.executions WHERE args::jsonb -> 'args' ->> 0 = %s",
        (x,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_call_after_the_session_lost_its_prepared_statements_enqueues_once(
    admin: psycopg.Connection[Any],
) -> None:
    first = sent.queue_sync("first")
    # What a session pooler's reset (DISCARD ALL) does between two clients of one server
    # session: the statements this connection prepared are gone.
    conn = client.sync_store()._local.conn
    conn.execute("DEALLOCATE ALL")
    second = sent.queue_sync("second")
    third = sent.queue_sync("third")
    assert len({first, second, third}) == 3
    for x, execution_id in (("first", first), ("second", second), ("third", third)):
        assert args_of(admin, execution_id) is not None
        assert count_of(admin, x) == 1
    # The statement is prepared again for the calls after the one that found it gone.
    prepared = conn.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE name = 'workflows_enqueue_now'"
    ).fetchone()
    assert prepared == (1,)


def test_arguments_larger_than_the_socket_takes_at_once_arrive_whole(
    admin: psycopg.Connection[Any],
) -> None:
    sent.queue_sync("warm")
    # A socket that takes 4 KiB at a time (a busy or distant server's): libpq sends the
    # arguments over many writes as the server reads them.
    fd = client.sync_store()._local.conn.pgconn.socket
    with socket.socket(fileno=os.dup(fd)) as same:
        same.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    # Near the payload limit (1 MiB of JSON), in characters of 1 to 4 bytes.
    big = ("aé中😀" * 26_000)[:100_000] + "z" * 780_000
    execution_id = sent.queue_sync(big)
    stored = args_of(admin, execution_id)
    assert stored is not None
    assert json.loads(stored)["args"] == [big]


def test_an_interrupt_while_the_statement_waits_enqueues_nothing_and_the_next_call_works(
    admin: psycopg.Connection[Any], database_url: str
) -> None:
    sent.queue_sync("warm")  # the thread's connection, its statement prepared
    pid = client.sync_store()._local.conn.info.backend_pid

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    def interrupt_once_waiting() -> None:
        # Once the enqueue waits for the table's lock, interrupt the main thread's wait.
        with psycopg.connect(database_url, autocommit=True) as watcher:
            while True:
                row = watcher.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                if row is not None and row[0] == "Lock":
                    break
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with admin.transaction():
            admin.execute("LOCK TABLE workflows.executions IN ACCESS EXCLUSIVE MODE")
            watcher = threading.Thread(target=interrupt_once_waiting)
            watcher.start()
            with pytest.raises(Interrupted):
                sent.queue_sync("interrupted")
            watcher.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # The lock is gone: a statement still waiting for it would have inserted its row now.
    after = sent.queue_sync("after")
    assert args_of(admin, after) is not None
    assert count_of(admin, "interrupted") == 0
    # The interrupted statement was cancelled, and its connection closed, not reused.
    ended = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
    assert ended.fetchone() == (0,)
