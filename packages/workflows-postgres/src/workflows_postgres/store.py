"""The asyncpg store: the client's async path and everything a worker asks of the database."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg

from workflows import codec
from workflows.config import Settings
from workflows.errors import DatabaseUnavailableError, SerializationError, WorkflowsError
from workflows.history import StepRecord
from workflows.records import (
    ActivationResult,
    Advance,
    Advanced,
    ChildRow,
    Claimed,
    DeadWorker,
    Outcome,
    Plan,
    Recovered,
    Recovery,
    Registration,
    StepRow,
    claimed_of,
    eager_claims,
)
from workflows.store import EnqueueRequest
from workflows_postgres import ops, pooler
from workflows_postgres import queries as Q
from workflows_postgres.connect import first_line, redact, resolve_dsn, scrub, unavailable
from workflows_postgres.errors import RETRYABLE as _RETRYABLE
from workflows_postgres.errors import TRANSIENT_ERRORS, is_poison
from workflows_postgres.heart import PostgresHeart
from workflows_postgres.listener import PostgresListener, handed_over
from workflows_postgres.results import ResultWatcher

__all__ = ["PostgresStore", "handed_over", "step_record"]
from workflows_postgres.migrate import latest_version, schema_error

log = logging.getLogger(__name__)
T = TypeVar("T")

_NO_WORKER = "00000000-0000-0000-0000-000000000000"
# Our statements are long CTEs whose best plan does not depend on the values; planning them
# afresh on every call cost as much as running them. A generic plan's cost estimate can pass
# jit_above_cost, and compiling it took a second. A generic plan is kept for the connection's
# life: made while a table is small (a new deployment, statistics of a few rows), it scans the
# whole table for every key, and kept there while the table grows. Every statement here finds
# its rows through an index; a scan of the whole table is never the plan to keep.
# Seconds between two reads of whether a results listener is connected (see results_listening).
LISTENING_READ = 0.5
_SESSION = {"plan_cache_mode": "force_generic_plan", "jit": "off", "enable_seqscan": "off"}


def _claimed(row: asyncpg.Record) -> Claimed:
    resolutions = row["resolutions"]
    return claimed_of(
        {
            "id": row["id"],
            "kind": row["kind"],
            "name": row["name"],
            "queue": row["queue"],
            "args": row["args"],
            "attempts": row["attempts"],
            "max_retries": row["max_retries"],
            "timeout": row["timeout_seconds"],
            "lease": row["lease"],
            "version": row["version"],
            "wakeups": row["wakeups"],
            "parent_id": row["parent_id"],
            "deadline": row["deadline"],
            "pickup_latency": row["pickup_latency"],
            "parent_seq": row["parent_seq"],
            "resolutions": None
            if resolutions is None
            else [_resolution(item) for item in codec.decode(resolutions)],
            "trace_context": row["trace_context"],
        }
    )


def _resolution(item: dict[str, Any]) -> StepRecord:
    return StepRecord(
        seq=item["seq"],
        kind=item["kind"],
        name=item["name"],
        status=item["status"],
        result=item["result"],
        error=item["error"],
    )


def step_record(row: Any) -> StepRecord:
    return StepRecord(
        seq=row["seq"],
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        result=codec.decode(row["result"]),
        error=codec.decode(row["error"]),
        delivered_in=row["delivered_in"],
    )


class PostgresStore:
    """One asyncpg pool bound to one event loop and one schema."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, dsn: str) -> None:
        self.pool = pool
        self.settings = settings
        self.dsn = dsn
        self.q = Q.Queries.for_schema(settings.schema)
        self._claim_conn: asyncpg.Connection | None = None
        self._claim_lock = asyncio.Lock()
        # A pool connection kept for the worker's writes of outcomes and activations
        # (_on_held), and whether one is on it now.
        self._held: Any = None
        self._held_busy = False
        # Single enqueues one after another (a web app's requests) go on a connection of their
        # own: a pool acquire and release (a task, several loop iterations) cost as much CPU as
        # the statement. Concurrent ones beyond the first take the pool.
        self._producer: asyncpg.Connection | None = None
        self._producer_busy = False
        self._producer_retry_at = 0.0
        # enqueue_one()'s statements (ops.plain_args picks one), looked up once.
        self._enqueue_sql = {name: self.sql(name) for name in ("enqueue", "enqueue_now")}
        self.results = ResultWatcher(self)
        # Whether a results listener is connected (results_listening), and when that was read.
        self._listening = False
        self._listening_read = -math.inf

    # ---- construction --------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        settings: Settings | None = None,
        *,
        dsn: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
    ) -> PostgresStore:
        settings = settings or Settings.from_env()
        if dsn is None:
            dsn = await asyncio.to_thread(resolve_dsn, settings)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=10,
                command_timeout=None,
                reset=_reset_connection,
                init=pooler.after_connect(settings.pooler, _SESSION),
                **pooler.asyncpg_options(settings.pooler, _SESSION),
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise unavailable(dsn, exc) from None
        except TimeoutError:
            raise DatabaseUnavailableError(f"cannot connect to {redact(dsn)}: timed out") from None
        store = cls(pool, settings, dsn)
        try:
            await store.check_schema()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        # Waiters first: they get an error rather than a pool that refuses them.
        await self.results.close()
        if self._claim_conn is not None:
            with contextlib.suppress(Exception):
                await self._claim_conn.close(timeout=5)
            self._claim_conn = None
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.close(timeout=5)
        held, self._held = self._held, None
        if held is not None:
            # The pool's close waits for every connection to come back.
            with contextlib.suppress(Exception):
                await self.pool.release(held)
        await self.pool.close()

    def terminate(self) -> None:
        """End every connection at once, without the event loop (which has stopped)."""
        for conn in (self._claim_conn, self._producer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.terminate()
        self._claim_conn = self._producer = self._held = None
        with contextlib.suppress(Exception):
            self.pool.terminate()

    async def check_schema(self) -> None:
        schema = self.settings.schema
        async with self.pool.acquire() as conn:
            present = await conn.fetchval(
                self.sql("schema_exists"), f"{Q.quote_ident(schema)}.schema_migrations"
            )
            version = await conn.fetchval(self.sql("schema_version")) if present else None
        if version != latest_version():
            raise schema_error(schema, version)

    def sql(self, name: str) -> str:
        """The named statement (sql/*.sql) for this store's schema."""
        return self.q.sql(name)

    # ---- running operations --------------------------------------------------------------

    async def _drive(self, conn: Any, op: ops.Op[T]) -> T:
        try:
            call = next(op)
            while True:
                rows = await conn.fetch(self.sql(call.sql), *call.args)
                call = op.send(rows)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except asyncpg.UndefinedTableError:
            raise schema_error(self.settings.schema, None) from None
        except asyncpg.DataError as exc:
            # A value the database cannot hold (a character its encoding lacks): the caller's.
            raise SerializationError(f"the database refused a value: {first_line(exc)}") from None

    async def run(self, make_op: Any, *args: Any, transaction: bool = True) -> Any:
        for attempt in range(5):
            try:
                async with self.pool.acquire() as conn:
                    if not transaction:
                        return await self._drive(conn, make_op(*args))
                    async with conn.transaction():
                        return await self._drive(conn, make_op(*args))
            except _RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
            except (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError) as exc:
                raise DatabaseUnavailableError(
                    f"lost the database connection: {scrub(first_line(exc), self.dsn)}"
                ) from None
        raise AssertionError("unreachable")

    # ---- the client API (workflows.store.AsyncStore) ---------------------------------------

    async def enqueue(self, request: EnqueueRequest, conn: Any = None) -> str:
        if conn is not None:
            # The caller's transaction: the row and its notification exist only if it commits.
            return await self._drive(conn, ops.enqueue(request, handoff=False))
        own = await self._take_producer()
        if own is not None:
            try:
                return await self._drive(own, ops.enqueue(request))
            except BaseException as exc:
                self._producer_failed(own, exc)
            finally:
                self._producer_busy = False
        result: str = await self.run(ops.enqueue, request, transaction=False)
        return result

    async def enqueue_one(self, options: EnqueueRequest, payload: str) -> str:
        # The producers' hot path (a plain f.queue(x)): enqueue() without its generator, its
        # statement lookup and its idempotency retries, on the own connection when it is open.
        own = self._producer
        if (
            own is not None
            and not self._producer_busy
            and not own.is_closed()
            and options.idempotency_key is None
        ):
            name, head, tail, _ = options.prepared or ops.plain_args(options)
            self._producer_busy = True
            try:
                rows = await own.fetch(self._enqueue_sql[name], *head, payload, *tail)
                if rows:
                    # The statement casts the id to text: the row holds the str to return.
                    return rows[0][0]  # type: ignore[no-any-return]
            except BaseException as exc:
                self._producer_failed(own, exc)
                # Lost to another transaction: the pool's retries, as in enqueue().
                request = replace(options, args=payload, prepared=None)
                result: str = await self.run(ops.enqueue, request, transaction=False)
                return result
            finally:
                self._producer_busy = False
            # No row: a worker offers itself for the queue (enqueue_now); enqueue() hands over.
        return await self.enqueue(replace(options, args=payload, prepared=None))

    async def _take_producer(self) -> asyncpg.Connection | None:
        """The own connection for one enqueue (``_producer_busy`` set: the caller clears it),
        or None: the pool's turn."""
        if self._producer_busy:
            return None
        self._producer_busy = True
        try:
            own = self._producer
            if own is None or own.is_closed():
                own = self._producer = await self._open_producer()
        except BaseException:
            self._producer_busy = False
            raise
        if own is None:
            self._producer_busy = False
        return own

    def _producer_failed(self, own: asyncpg.Connection, exc: BaseException) -> None:
        """After ``exc`` from an enqueue on the own connection: returns when the pool should
        try it again (a lost race), else raises what the caller gets, with a lost or unknown
        connection dropped."""
        if isinstance(exc, _RETRYABLE):
            return
        if isinstance(exc, asyncpg.PostgresError | WorkflowsError):
            # The statement's error (autocommit: nothing left open), or the server's end of
            # the session (then the next call opens another).
            if own.is_closed():
                self._producer = None
        else:
            # Lost, or cancelled mid-statement: never reused in an unknown state.
            self._producer = None
            own.terminate()
        mapped = self._mapped(exc)
        if mapped is exc:
            raise exc
        raise mapped from None

    def _mapped(self, exc: BaseException) -> BaseException:
        """What the caller gets for ``exc`` from a statement of ours (as _drive() and run()
        say it)."""
        if isinstance(exc, asyncpg.UndefinedTableError):
            return schema_error(self.settings.schema, None)
        if isinstance(exc, asyncpg.DataError):
            return SerializationError(f"the database refused a value: {first_line(exc)}")
        if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
            return DatabaseUnavailableError(
                f"lost the database connection: {scrub(first_line(exc), self.dsn)}"
            )
        return exc

    async def _open_producer(self) -> asyncpg.Connection | None:
        """The producer's own connection; None (the pool instead) when it cannot be opened,
        tried again at most once a second."""
        if time.monotonic() < self._producer_retry_at:
            return None
        try:
            # As the pool's connections: through a pooler, its options (no startup
            # parameters, no statement cache in transaction mode).
            conn: asyncpg.Connection = await pooler.connect(
                self.dsn, self.settings.pooler, _SESSION, timeout=10
            )
        except Exception:
            self._producer_retry_at = time.monotonic() + 1.0
            return None
        if self.pool.is_closing():
            # Closed meanwhile: close() has run and would not close this one.
            await conn.close()
            return None
        return conn

    async def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]:
        result: list[str] = await self.run(ops.enqueue_many, options, payloads, transaction=False)
        return result

    async def send_signal(self, workflow_id: str, name: str, payload: str) -> None:
        await self.run(ops.send_signal, workflow_id, name, payload)

    async def get_status(self, execution_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.run(ops.get_status, execution_id, transaction=False)
        return result

    async def steps_of(self, workflow_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.run(ops.steps_of, workflow_id, transaction=False)
        return result

    async def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]:
        """The execution's status once final; no connection held while waiting (results.py)."""
        return await self.results.wait(execution_id, timeout)

    async def cancel(self, execution_id: str) -> str:
        result: str = await self.run(ops.cancel, execution_id)
        return result

    # ---- the worker's side (workflows.store.WorkerStore) ------------------------------------

    async def control(self, statement: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.run(ops.control, statement, args)
        return result

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TRANSIENT_ERRORS)

    def is_poison(self, exc: BaseException) -> bool:
        return is_poison(exc)

    async def register_worker(self, worker_id: str, registration: Registration) -> None:
        r = registration
        await self.pool.execute(
            self.sql("register_worker"),
            worker_id,
            r.hostname,
            r.pid,
            list(r.queues),
            r.code_version,
        )

    async def deregister_worker(self, worker_id: str) -> None:
        await self.pool.execute(self.sql("deregister_worker"), worker_id)

    def heart(self, worker_id: str, registration: Registration) -> PostgresHeart:
        return PostgresHeart(self.dsn, self.settings.schema, worker_id, registration)

    def listener(
        self,
        worker_id: str,
        *,
        on_work: Callable[[str], None],
        on_cancel: Callable[[str], None],
        on_start: Callable[[str], None],
        on_connected: Callable[[], None],
    ) -> PostgresListener:
        return PostgresListener(
            self,
            worker_id,
            on_work=on_work,
            on_cancel=on_cancel,
            on_start=on_start,
            on_connected=on_connected,
        )

    async def pump(
        self,
        worker_id: str,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        known_versions: dict[str, int] | None = None,
        resume_sticky: bool = False,
    ) -> tuple[set[str], list[Claimed]]:
        """Record outcomes and claim up to ``limit`` executions, in one statement.

        With ``resume_sticky``, a waiting workflow that one of the outcomes resolves and that
        this worker holds in memory is admitted back at once (beyond ``limit``: the caller
        counts the slots such outcomes free). Returns the ids whose outcome was recorded (their
        claim still held) and what was claimed.
        """
        names = list(known_versions or {})
        versions = [known_versions[n] for n in names] if known_versions else []
        if not outcomes:
            # Nothing to record (an idle worker woken for new work): the lighter claim alone.
            return set(), await self._claim_only((worker_id, list(queues), limit, names, versions))
        head = (_outcomes_json(outcomes), list(queues), limit, worker_id, names, versions)
        listening = await self.results_listening()
        if all(o.parent_id is None or o.status == "pending" for o in outcomes):
            # No activity ends: no workflow step to resolve, the statement without those CTEs.
            rows = await self._fetch_retrying("pump_jobs", (*head, listening), held=True)
        else:
            args = (*head, resume_sticky, listening)
            rows = await self._fetch_retrying("pump", args, held=True)
        return _pumped(rows)

    async def results_listening(self) -> bool:
        """Whether finished jobs should be announced: a results listener is connected, as read
        at most every LISTENING_READ seconds. A listener that connects meanwhile misses the
        announcements of that fraction of a second; its waiters' tick finds those results."""
        now = time.monotonic()
        if now - self._listening_read >= LISTENING_READ:
            self._listening_read = now
            self._listening = bool(await self.pool.fetchval(self.sql("results_listening")))
        return self._listening

    async def _fetch_retrying(
        self, name: str, args: Sequence[Any], *, held: bool = False
    ) -> list[Any]:
        """One statement on a pooled connection, again when it lost a deadlock or conflict.

        ``held``: on the pool connection this store keeps for such writes, when it is free
        (see _on_held)."""
        for attempt in range(5):
            try:
                if held and not self._held_busy:
                    return await self._on_held(name, args)
                rows: list[Any] = await self.pool.fetch(self.sql(name), *args)
                return rows
            except _RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _on_held(self, name: str, args: Sequence[Any]) -> list[Any]:
        """The statement on a pool connection this store keeps for the worker's writes (the
        pump's rounds, one after another, and activation batches): an acquire and release per
        statement (a task and several event loop passes) cost about 80 µs of its wall time
        and 50 µs of CPU."""
        self._held_busy = True
        try:
            conn = self._held
            if conn is not None and not _usable(conn):
                # Lost while idle: the next statement goes on another, not to its error.
                await self._drop_held(conn)
                conn = None
            if conn is None:
                conn = self._held = await self.pool.acquire()
            try:
                rows: list[Any] = await conn.fetch(self.sql(name), *args)
            except asyncio.CancelledError:
                # asyncpg cancels the statement on the server (a connection closed instead
                # would leave it to run, and commit, once its locks came), and the next
                # statement on this connection waits for that.
                raise
            except BaseException as exc:
                if not isinstance(exc, asyncpg.PostgresError) or not _usable(conn):
                    await self._drop_held(conn)
                raise
            return rows
        finally:
            self._held_busy = False

    async def _drop_held(self, conn: Any) -> None:
        """The held connection back to the pool, closed (the pool opens another in its
        place); a proxy asyncpg detached already (its connection closed) needs nothing."""
        self._held = None
        with contextlib.suppress(Exception):
            conn.terminate()
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def _claim_only(self, params: tuple[Any, ...]) -> list[Claimed]:
        """A round with nothing to record (an idle worker woken): the claim alone.

        It runs on a connection of its own that commits without waiting for the WAL flush: a
        claim lost in a crash of PostgreSQL only makes the execution runnable again, which
        recovery does anyway, and every outcome recorded later flushes the claim before it.
        That wait was on the path from enqueue to start.
        """
        async with self._claim_lock:
            if self._claim_conn is None or self._claim_conn.is_closed():
                self._claim_conn = await pooler.connect(
                    self.dsn,
                    self.settings.pooler,
                    _SESSION | {"synchronous_commit": "off"},
                    timeout=10,
                )
            try:
                rows = await self._claim_conn.fetch(self.sql("claim"), *params)
            except BaseException:
                conn, self._claim_conn = self._claim_conn, None
                conn.terminate()
                raise
        return [_claimed(row) for row in rows if row["id"] is not None]

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        known_versions: dict[str, int] | None = None,
    ) -> list[Claimed]:
        """Claim up to ``limit`` runnable executions (a pump with nothing to record)."""
        return (await self.pump(worker_id, (), queues, limit, known_versions))[1]

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Record outcomes (a pump that claims nothing); the ids whose claim still held."""
        return (await self.pump(_NO_WORKER, outcomes, (), 0))[0]

    async def release(self, claimed: Claimed, worker_id: str, delay: float = 0.0) -> bool:
        """Give an execution back to pending without counting the attempt (a few times in a
        row at most: see the `release` statement)."""
        return await self.release_id(claimed.id, claimed.lease, worker_id, delay)

    async def release_id(
        self, execution_id: str, lease: int, worker_id: str, delay: float = 0.0
    ) -> bool:
        row = await self.pool.fetchrow(self.sql("release"), execution_id, lease, delay, worker_id)
        return row is not None

    async def release_many(self, claims: Sequence[Claimed], worker_id: str) -> int:
        """``release`` for several claims of ``worker_id`` at once, due now: how many went
        back (a claim no longer held here is left alone)."""
        rows = await self.pool.fetch(
            self.sql("release_many"), [c.id for c in claims], [c.lease for c in claims], worker_id
        )
        return len(rows)

    async def take_handoff(
        self, execution_id: str, worker_id: str, conn: asyncpg.Connection | None = None
    ) -> Claimed | None:
        """The job handed to ``worker_id`` (see enqueue() in 0006), if the table says it was.

        ``conn``: the connection the notification came on, idle otherwise, which saves a pool
        checkout on the pickup path.
        """
        source: Any = self.pool if conn is None else conn
        row = await source.fetchrow(self.sql("handed_over"), execution_id, worker_id)
        return None if row is None else _claimed(row)

    async def cancel_requested(self, claimed: Claimed, worker_id: str) -> bool:
        """Whether a cancel of ``claimed`` (held by ``worker_id``) was asked for in the table."""
        return bool(
            await self.pool.fetchval(
                self.sql("cancel_requested"), claimed.id, claimed.lease, worker_id
            )
        )

    async def running_here(self, worker_id: str) -> set[tuple[str, int]]:
        """The executions the database says ``worker_id`` runs, as (id, lease)."""
        rows = await self.pool.fetch(self.sql("running_here"), worker_id)
        return {(row["id"], row["lease"]) for row in rows}

    async def load_history(self, workflow_id: str) -> list[StepRecord]:
        rows = await self.pool.fetch(self.sql("load_history"), workflow_id)
        return [step_record(row) for row in rows]

    async def apply_activation(
        self,
        claimed: Claimed,
        worker_id: str,
        *,
        number: int,
        delivered: Sequence[int],
        plan: Plan,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
    ) -> ActivationResult:
        """Write one activation (one round trip while the workflow goes on), fenced on its claim."""
        item = _activation(
            claimed,
            number,
            delivered,
            plan,
            status,
            result,
            None if error is None else codec.encode(error),
        )
        text = _dump(item)
        for attempt in range(5):
            try:
                async with self.pool.acquire() as conn:
                    if status == "blocked":
                        final = await conn.fetchval(self.sql("apply_activation"), worker_id, text)
                    else:
                        async with conn.transaction():
                            final = await conn.fetchval(
                                self.sql("apply_activation"), worker_id, text
                            )
                            if final in ("completed", "failed"):
                                # What the workflow started and never waited for ends with it.
                                await self._drive(conn, ops.close_children(claimed.id))
                break
            except _RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        if final is None:
            return ActivationResult(None)
        eager = (
            eager_claims(claimed.id, plan.children, plan.trace_context)
            if final in ("waiting", "pending")
            else []
        )
        return ActivationResult(str(final), eager)

    async def advance(self, worker_id: str, items: Sequence[Advance]) -> list[Advanced]:
        """Apply a batch of :class:`Advance` items in one statement (one commit), in order."""
        # Locks are taken in workflow order, so two batches cannot deadlock on each other;
        # items of one workflow keep their order (a stable sort).
        order = sorted(range(len(items)), key=lambda k: items[k].workflow.id)
        docs = [_advance_item(items[k]) for k in order]
        _mark_runs(docs)
        rows = await self._fetch_retrying("advance", (worker_id, _dump(docs)), held=True)
        results: list[Advanced] = [Advanced("stale")] * len(items)
        for row in rows:
            k = order[row["item"] - 1]
            outcome = row["outcome"]
            it = items[k]
            eager = (
                eager_claims(it.workflow.id, it.plan.children, it.plan.trace_context)
                if outcome in ("waiting", "pending")
                else []
            )
            results[k] = Advanced(outcome, row["lease"], eager)
        return results

    # ---- the leader's maintenance, liveness ------------------------------------------------

    async def lead(self, worker_id: str, ttl: float) -> bool:
        return bool(await self.pool.fetchval(self.sql("lead"), worker_id, float(ttl)))

    async def resign(self, worker_id: str) -> None:
        await self.pool.execute(self.sql("resign"), worker_id)

    async def fire_due_steps(self) -> int:
        row = await self.pool.fetchrow(self.sql("fire_due_steps"))
        return int(row["fired"]) if row else 0

    async def expire_workflows(self) -> list[str]:
        """Fail workflows past their deadline (and cancel what they started); their queues."""

        async def op() -> list[str]:
            queues: list[str] = []
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(self.sql("overdue_workflows"))
                for row in rows:
                    error = codec.error_payload(_timeout_error(), with_traceback=False)
                    await self._drive(conn, ops.finish_tree(row["id"], "failed", error))
                    queues.append(row["queue"])
            return queues

        for attempt in range(5):
            try:
                return await op()
            except _RETRYABLE:
                if attempt == 4:
                    raise
        return []

    async def offer(
        self, worker_id: str, queues: Sequence[str], lock_key: int, seconds: float
    ) -> None:
        """Offer an idle worker for the next job of ``queues`` for ``seconds`` (see 0003).

        Only while a session of the worker holds the advisory lock ``lock_key``.
        """
        await self.pool.execute(self.sql("offer"), worker_id, list(queues), lock_key, seconds)

    async def withdraw(self, worker_id: str) -> None:
        await self.pool.execute(self.sql("withdraw"), worker_id)

    async def recover(self, worker_id: str, timeout: float) -> Recovery:
        """Take over the work of dead peers."""
        announce = await self.results_listening()
        async with self.pool.acquire() as conn, conn.transaction():
            dead = await conn.fetch(self.sql("claim_dead_workers"), timeout, worker_id)
            dead_ids = [row["worker_id"] for row in dead]
            orphans = await conn.fetch(self.sql("orphaned_running"), dead_ids)
            outcomes: list[Outcome] = []
            workflows: list[str] = []
            leases: list[int] = []
            recovered: list[Recovered] = []
            workflow_queues: list[str] = []
            lost = codec.encode({"type": "WorkerLost", "message": "worker lost"})
            # The worker died before it could act on a cancel: it ends cancelled, never runs again.
            cancelled = codec.encode(
                {"type": "ExecutionCancelledError", "message": "cancelled on request"}
            )
            for row in orphans:
                if row["kind"] == "workflow":
                    workflows.append(row["id"])
                    leases.append(row["lease"])
                    workflow_queues.append(row["queue"])
                    continue
                if row["cancel_requested"]:
                    status, error = "cancelled", cancelled
                elif row["attempts"] <= row["max_retries"]:
                    status, error = "pending", lost
                else:
                    status, error = "failed", lost
                recovered.append(Recovered(row["id"], row["kind"], row["queue"], status))
                outcomes.append(
                    Outcome(
                        id=row["id"],
                        lease=row["lease"],
                        status=status,
                        error=error,
                        retry_delay=0.0,
                    )
                )
            if outcomes:
                await conn.fetch(
                    self.sql("pump"),
                    _outcomes_json(outcomes),
                    [],
                    0,
                    worker_id,
                    [],
                    [],
                    False,
                    announce,
                )
            if workflows:
                await conn.fetch(self.sql("requeue_workflows"), workflows, leases)
        return Recovery(
            [DeadWorker(row["worker_id"], row["hostname"], row["pid"]) for row in dead],
            recovered,
            workflow_queues,
        )

    async def workers_alive(self, timeout: float) -> int:
        return int(await self.pool.fetchval(self.sql("workers_alive"), timeout))

    async def queue_depths(
        self, queues: Sequence[str], cap: int = 100_000
    ) -> dict[tuple[str, str], int]:
        """Pending, waiting, held and throttled executions per queue (see the statement),
        each counted up to ``cap``."""
        rows = await self.pool.fetch(self.sql("queue_depths"), list(queues), cap)
        depths: dict[tuple[str, str], int] = {}
        for row in rows:
            for state in ("pending", "waiting", "held", "throttled"):
                depths[(row["queue"], state)] = row[state]
        return depths

    async def any_runnable(self, queues: Sequence[str]) -> bool:
        return bool(await self.pool.fetchval(self.sql("any_runnable"), list(queues)))


def _usable(conn: Any) -> bool:
    """Whether a pool connection held here can take a statement: open, in no transaction,
    and still lent (asyncpg detaches the proxy of a connection that closed, and every call on
    it then raises)."""
    try:
        return not conn.is_closed() and not conn.is_in_transaction()
    except asyncpg.InterfaceError:
        return False


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset is a server round trip (RESET ALL, UNLISTEN *, ...) on every
    # release, doubling the cost of each pooled query; this store sets no session state, and
    # its listeners remove themselves, so only a transaction left open needs undoing.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# json.dumps with options builds an encoder on every call: one, made once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dump(value: Any) -> str:
    # Values inside are JSON text already checked by the codec; the rows around them are ours.
    return _ENCODER.encode(value)


def _outcomes_json(outcomes: Sequence[Outcome]) -> str:
    return _dump(
        [
            {
                "id": o.id,
                "lease": o.lease,
                "status": o.status,
                "result": o.result,
                "error": o.error,
                "retry_delay": o.retry_delay,
            }
            for o in outcomes
        ]
    )


def _pumped(rows: Sequence[Any]) -> tuple[set[str], list[Claimed]]:
    recorded = set(rows[0]["recorded"] or ()) if rows else set()
    return recorded, [_claimed(row) for row in rows if row["id"] is not None]


def _step(row: StepRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "kind": row.kind,
        "name": row.name,
        "status": row.status,
        "exec": row.execution_id,
        "seconds": row.seconds,
        "result": row.result,
        "delivered": row.delivered_in,
    }


def _child(row: ChildRow, workflow_id: str, trace_context: str | None) -> dict[str, Any]:
    # Named after the executions columns: admit() inserts an eager one as it is.
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "queue": row.queue,
        "priority": row.priority,
        "args": row.args,
        "max_retries": row.max_retries,
        "timeout_seconds": row.timeout,
        "version": row.version,
        "workflow_timeout": row.workflow_timeout,
        "parent_id": workflow_id,
        "parent_seq": row.seq,
        "concurrency_key": row.concurrency_key,
        "concurrency_limit": row.concurrency_limit,
        "rate_key": row.rate_key,
        "eager": row.eager,
        "trace_context": trace_context,
    }


def _activation(
    wf: Claimed,
    number: int,
    delivered: Sequence[int],
    plan: Plan,
    outcome: str,
    result: str | None,
    error: str | None,
) -> dict[str, Any]:
    """One activation as activate() in 0006 reads it."""
    return {
        "wf": wf.id,
        "lease": wf.lease,
        "wakeups": wf.wakeups,
        "number": number,
        "delivered": list(delivered),
        "signals": plan.signals,
        "outcome": outcome,
        "result": result,
        "error": error,
        "steps": [_step(s) for s in plan.steps],
        "children": [_child(c, wf.id, plan.trace_context) for c in plan.children],
    }


def _advance_item(it: Advance) -> dict[str, Any]:
    """One batch item as advance() in 0006 reads it."""
    item = _activation(
        it.workflow, it.number, it.delivered, it.plan, it.outcome, it.result, it.error
    )
    act = it.activity
    if act is not None:
        item.update(
            act=act.id,
            act_lease=act.lease,
            seq=act.parent_seq,
            act_status=it.act_status,
            act_result=it.act_result,
            act_error=it.act_error,
        )
    return item


def _ended_child(doc: dict[str, Any], nxt: dict[str, Any]) -> dict[str, Any] | None:
    """The item's one child as the next item ends it, when that item does (advance()'s kid)."""
    children = doc["children"]
    if (
        doc["outcome"] != "blocked"
        or doc["signals"]
        or len(children) != 1
        or nxt["wf"] != doc["wf"]
        or nxt.get("act_lease") != 1
    ):
        return None
    child = children[0]
    if child["id"] != nxt.get("act") or not child["eager"] or child["trace_context"] is not None:
        return None
    return {
        **child,
        "done": nxt["act_status"],
        "result": nxt["act_result"],
        "error": nxt["act_error"],
    }


def _mark_runs(docs: list[dict[str, Any]]) -> None:
    """Give the first item of each run (items of one workflow in a row, each ending the child
    the one before started; the first may be a claimed workflow's activation) the children of
    the whole run, as "run_kids": advance() admits them at once, checking each against its
    item."""
    kids = [_ended_child(a, b) for a, b in itertools.pairwise(docs)]
    i = 0
    while i < len(kids):
        j = i
        while j < len(kids) and kids[j] is not None:
            j += 1
        if j - i > 1:
            docs[i]["run_kids"] = kids[i:j]
        i = j + 1


def _timeout_error() -> BaseException:
    from workflows.errors import WorkflowTimeoutError

    return WorkflowTimeoutError("workflow ran past its timeout")
