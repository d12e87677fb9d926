"""The psycopg store: for sync callers and for enqueueing inside a caller's own transaction."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import dict_row

from workflows.config import Settings
from workflows.store import EnqueueRequest
from workflows_postgres import ops, pooler, pq_call
from workflows_postgres import queries as Q
from workflows_postgres.connect import connect_sync, first_line, resolve_dsn, scrub
from workflows_postgres.migrate import latest_version, schema_error
from workflows_postgres.results import SyncResultWatcher

T = TypeVar("T")

# enqueue_one()'s statements as prepared on each connection by _enqueue_pq (psycopg's own
# are named _pg3_*).
_PQ_NAMES = {"enqueue": b"workflows_enqueue", "enqueue_now": b"workflows_enqueue_now"}
# _enqueue_pq(): enqueue_now found a worker's offer and inserted nothing (no id is empty).
_OFFERED = ""


class SyncStore:
    """One psycopg connection per thread, opened on first use."""

    def __init__(self, settings: Settings | None = None, *, dsn: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._dsn = dsn
        self.q = Q.Queries.for_schema(self.settings.schema)
        self._local = threading.local()
        # Every thread's connection, for close_all() (a workflows.Client closing).
        self._opened: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._sql: dict[str, str] = {}
        self.results = SyncResultWatcher(self)
        # None: psycopg decides (it prepares a statement run five times on a connection); a
        # transaction-mode pooler runs the next statement on another server session, where the
        # prepared one does not exist: never, on the caller's connections too.
        self._prepare: bool | None = False if self.settings.pooler == pooler.TRANSACTION else None
        # enqueue_one()'s statements (ops.plain_args picks one), looked up once.
        self._enqueue_sql = {
            name: Q.to_psycopg_positional(self.q.sql(name)) for name in ("enqueue", "enqueue_now")
        }
        self._enqueue_pq_sql = {
            name: self.q.sql(name).encode() for name in ("enqueue", "enqueue_now")
        }

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            self._dsn = resolve_dsn(self.settings)
        return self._dsn

    def sql(self, name: str) -> str:
        text = self._sql.get(name)
        if text is None:
            text = self._sql[name] = Q.to_psycopg(self.q.sql(name))
        return text

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect_sync(
                self.dsn, autocommit=True, **pooler.psycopg_options(self.settings.pooler)
            )
            self._check_schema(conn)
            self._local.conn = conn
            self._opened.add(conn)
        return conn

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        schema = self.settings.schema
        with conn.cursor() as cur:
            cur.execute(
                self.sql("schema_exists"), {"p1": f"{Q.quote_ident(schema)}.schema_migrations"}
            )
            row = cur.fetchone()
            version = None
            if row and row[0]:
                cur.execute(self.sql("schema_version"))
                got = cur.fetchone()
                version = got[0] if got else None
        if version != latest_version():
            raise schema_error(schema, version)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close_all(self) -> None:
        """Close the connection of every thread (one that calls again opens a new one)."""
        for conn in list(self._opened):
            conn.close()

    def _drive(self, conn: psycopg.Connection[Any], op: ops.Op[T]) -> T:
        try:
            call = next(op)
            with conn.cursor(row_factory=dict_row) as cur:
                while True:
                    params = {f"p{i}": value for i, value in enumerate(call.args, start=1)}
                    cur.execute(self.sql(call.sql), params, prepare=self._prepare)
                    rows = cur.fetchall() if cur.description is not None else []
                    call = op.send(rows)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except psycopg.errors.UndefinedTable:
            raise schema_error(self.settings.schema, None) from None
        except (psycopg.DataError, UnicodeEncodeError) as exc:
            # A value the database cannot hold (a character its encoding lacks; psycopg finds
            # that out itself when the connection's encoding is not UTF-8): the caller's.
            from workflows.errors import SerializationError

            raise SerializationError(f"the database refused a value: {first_line(exc)}") from None

    def run(self, op: ops.Op[T], *, transaction: bool = True) -> T:
        conn = self._connection()
        try:
            if not transaction:
                return self._drive(conn, op)
            with conn.transaction():
                return self._drive(conn, op)
        except psycopg.OperationalError as exc:
            self._lost(exc)

    # ---- workflows.store.SyncStore ---------------------------------------------------------

    def enqueue(self, request: EnqueueRequest, conn: Any = None) -> str:
        if conn is not None:
            # The caller's transaction: the row and its notification exist only if it commits.
            return self._drive(conn, ops.enqueue(request, handoff=False))
        return self.run(ops.enqueue(request), transaction=False)

    def enqueue_one(self, options: EnqueueRequest, payload: str) -> str:
        # The producers' hot path (a plain f.queue_sync(x)): enqueue() on this thread's own
        # connection, its statement sent through libpq with text parameters made once
        # (pq_call), or else through one cursor with positional parameters; without the
        # generator, a dict of parameters and a dict row made for each call.
        if options.idempotency_key is not None:
            return self.enqueue(replace(options, args=payload, prepared=None))
        name, head, tail, text = options.prepared or ops.plain_args(options)
        local = self._local
        conn: psycopg.Connection[Any] | None = getattr(local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connection()
        if text is not None and "\x00" not in payload:
            try:
                data = payload.encode()
            except UnicodeEncodeError:
                data = None  # the cursor's SerializationError
            if data is not None:
                got = self._enqueue_pq(conn, name, (*text[0], data, *text[1]))
                if got == _OFFERED:
                    return self.enqueue(replace(options, args=payload, prepared=None))
                if got is not None:
                    return got
        try:
            cur: psycopg.Cursor[Any] | None = getattr(local, "cursor", None)
            if cur is None or cur.connection is not conn:
                cur = local.cursor = conn.cursor()
            cur.execute(self._enqueue_sql[name], (*head, payload, *tail), prepare=self._prepare)
            row = cur.fetchone()
        except psycopg.OperationalError as exc:
            self._lost(exc)
        except psycopg.errors.UndefinedTable:
            raise schema_error(self.settings.schema, None) from None
        except (psycopg.DataError, UnicodeEncodeError) as exc:
            from workflows.errors import SerializationError

            raise SerializationError(f"the database refused a value: {first_line(exc)}") from None
        if row is None:
            # A worker offers itself for the queue (enqueue_now): enqueue() hands the run over.
            return self.enqueue(replace(options, args=payload, prepared=None))
        # The statement casts the id to text.
        return row[0]  # type: ignore[no-any-return]

    def _enqueue_pq(
        self, conn: psycopg.Connection[Any], name: str, params: Sequence[bytes | None]
    ) -> str | None:
        """enqueue_one()'s statement through libpq (pq_call): the new id; ``_OFFERED`` when
        it inserted nothing (a worker offers itself for the queue: enqueue() hands over); or
        None when the cursor must run it (the connection's encoding is not UTF-8, it is in a
        transaction, or the statement failed: the cursor's run raises psycopg's error)."""
        local = self._local
        state: tuple[psycopg.Connection[Any], bool, set[str]] | None = getattr(local, "pq", None)
        if state is None or state[0] is not conn:
            state = local.pq = (conn, conn.info.encoding == "utf-8", set())
        _, utf8, prepared = state
        pgconn = conn.pgconn
        if not utf8 or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return None
        statement = _PQ_NAMES[name]
        try:
            with conn.lock:
                if self._prepare is False:
                    # A transaction-mode pooler: the unnamed statement, parsed each time.
                    sql = self._enqueue_pq_sql[name]
                    result = pq_call.exchange(pgconn, lambda: pgconn.send_query_params(sql, params))
                else:
                    if name not in prepared:
                        sql = self._enqueue_pq_sql[name]
                        done = pq_call.exchange(
                            pgconn,
                            lambda: pgconn.send_prepare(statement, sql),
                            pq.ExecStatus.COMMAND_OK,
                        )
                        if done is None:
                            return None
                        prepared.add(name)
                    result = pq_call.exchange(
                        pgconn, lambda: pgconn.send_query_prepared(statement, params)
                    )
        except psycopg.OperationalError as exc:
            self._lost(exc)
        except BaseException:
            # Interrupted mid-statement (as psycopg's cursor does): the statement cancelled,
            # lest it commit a run the caller was told nothing of; the connection, left
            # mid-statement, closed.
            with contextlib.suppress(Exception):
                conn.cancel()
            self.close()
            raise
        if pgconn.status == pq.ConnStatus.BAD:
            # Ended by the server (its error came as the statement's result).
            self._lost(psycopg.OperationalError(pgconn.error_message.decode("utf-8", "replace")))
        if result is None or result.ntuples > 1:
            # Prepared again on the next call: a failure may have been the statement's
            # absence (a pooler's DISCARD ALL).
            prepared.clear()
            return None
        if result.ntuples == 0:
            return _OFFERED
        value = result.get_value(0, 0)
        assert value is not None
        return value.decode()

    def _lost(self, exc: psycopg.OperationalError) -> NoReturn:
        """The connection failed: closed (the next call opens another), and our error."""
        self.close()
        from workflows.errors import DatabaseUnavailableError

        raise DatabaseUnavailableError(
            f"database error: {scrub(first_line(exc), self._dsn)}"
        ) from None

    def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]:
        return self.run(ops.enqueue_many(options, payloads), transaction=False)

    def send_signal(self, workflow_id: str, name: str, payload: str) -> None:
        self.run(ops.send_signal(workflow_id, name, payload))

    def get_status(self, execution_id: str) -> dict[str, Any]:
        return self.run(ops.get_status(execution_id), transaction=False)

    def steps_of(self, workflow_id: str) -> list[dict[str, Any]]:
        return self.run(ops.steps_of(workflow_id), transaction=False)

    def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]:
        """The execution's status once final; every waiting thread shares one listener."""
        return self.results.wait(execution_id, timeout)

    def close_results(self) -> None:
        """Stop the results listener; threads still waiting get an error."""
        self.results.close()

    def control(self, statement: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.run(ops.control(statement, args))

    def cancel(self, execution_id: str) -> str:
        return self.run(ops.cancel(execution_id))
