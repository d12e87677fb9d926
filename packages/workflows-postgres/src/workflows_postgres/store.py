"""The asyncpg store: the client's async path and everything a worker asks of the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from workflows import codec
from workflows.config import Settings
from workflows.errors import DatabaseUnavailableError, SerializationError
from workflows.history import (
    RecordVersion,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepCommand,
    StepRecord,
    WaitSignal,
)
from workflows.store import EnqueueRequest
from workflows_postgres import ops
from workflows_postgres import queries as Q
from workflows_postgres.connect import first_line, redact, resolve_dsn, scrub, unavailable
from workflows_postgres.migrate import latest_version, schema_error

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_NO_WORKER = "00000000-0000-0000-0000-000000000000"
# Our statements are long CTEs whose best plan does not depend on the values; planning them
# afresh on every call cost as much as running them. A generic plan's cost estimate can pass
# jit_above_cost, and compiling it took a second. A generic plan is kept for the connection's
# life: made while a table is small (a new deployment, statistics of a few rows), it scans the
# whole table for every key, and kept there while the table grows. Every statement here finds
# its rows through an index; a scan of the whole table is never the plan to keep.
_SESSION = {"plan_cache_mode": "force_generic_plan", "jit": "off", "enable_seqscan": "off"}


@dataclass(frozen=True)
class Claimed:
    """One execution a worker now owns, until it records an outcome under ``lease``."""

    id: str
    kind: str
    name: str
    queue: str
    args: str
    attempts: int
    max_retries: int
    timeout: float | None
    lease: int
    version: int | None
    wakeups: int
    parent_id: str | None
    deadline: datetime | None
    pickup_latency: float | None
    parent_seq: int | None = None
    resolutions: list[StepRecord] | None = None


@dataclass(frozen=True)
class Outcome:
    id: str
    lease: int
    status: str  # completed | failed | cancelled | pending (retry)
    result: str | None = None
    error: str | None = None
    retry_delay: float | None = None
    # The workflow an activity belongs to: its worker may resume it straight away.
    parent_id: str | None = None


@dataclass(frozen=True)
class Recovered:
    id: str
    kind: str
    queue: str


@dataclass(frozen=True)
class ActivationResult:
    """What applying an activation did: ``None`` status when the claim had been lost."""

    status: str | None
    eager: list[Claimed] = field(default_factory=list)


@dataclass(frozen=True)
class Advance:
    """One workflow activation for :meth:`PostgresStore.advance`.

    Either of a workflow claimed by the worker (``activity`` None, fenced on the claim's
    lease), or run on an activity's final outcome by the worker's copy of the workflow
    (``activity`` and its ``act_*`` outcome, fenced on the copy's lease and wakeups).
    ``steps``/``children`` are :meth:`PostgresStore.step_rows` of its commands.
    """

    workflow: Claimed
    number: int
    delivered: list[int]
    outcome: str  # blocked | completed | failed
    result: str | None
    error: str | None
    steps: list[tuple[Any, ...]]
    children: list[tuple[Any, ...]]
    signals: list[str]
    activity: Claimed | None = None
    act_status: str | None = None  # completed | failed
    act_result: str | None = None
    act_error: str | None = None


@dataclass(frozen=True)
class Advanced:
    """What :meth:`PostgresStore.advance` did with one item (see the SQL function)."""

    # stale | fallback | claimed, or the workflow's new status (waiting, pending, completed...)
    outcome: str
    lease: int | None = None
    eager: list[Claimed] = field(default_factory=list)


def _claimed(row: asyncpg.Record) -> Claimed:
    return Claimed(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        queue=row["queue"],
        args=row["args"],
        attempts=row["attempts"],
        max_retries=row["max_retries"],
        timeout=row["timeout_seconds"],
        lease=row["lease"],
        version=row["version"],
        wakeups=row["wakeups"],
        parent_id=row["parent_id"],
        deadline=row["deadline"],
        pickup_latency=row["pickup_latency"],
        parent_seq=row["parent_seq"],
        resolutions=None
        if row["resolutions"] is None
        else [_resolution(item) for item in codec.decode(row["resolutions"])],
    )


def handed_over(payload: str, worker_id: str) -> str | None:
    """The execution id a notification on the start channel says was handed to ``worker_id``.

    Only a hint: any role that can connect may send one. :meth:`PostgresStore.take_handoff`
    reads the claim from the table before anything runs.
    """
    target, _, execution_id = payload.partition(" ")
    if target != worker_id or not execution_id:
        return None
    try:
        return str(uuid.UUID(execution_id))
    except ValueError:
        return None


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
        self._sql: dict[str, str] = {}
        self._claim_conn: asyncpg.Connection | None = None
        self._claim_lock = asyncio.Lock()

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
                server_settings=_SESSION,
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
        if self._claim_conn is not None:
            with contextlib.suppress(Exception):
                await self._claim_conn.close(timeout=5)
            self._claim_conn = None
        await self.pool.close()

    async def check_schema(self) -> None:
        schema = self.settings.schema
        async with self.pool.acquire() as conn:
            present = await conn.fetchval(
                self.sql(Q.SCHEMA_EXISTS), f"{Q.quote_ident(schema)}.schema_migrations"
            )
            version = await conn.fetchval(self.sql(Q.SCHEMA_VERSION)) if present else None
        if version != latest_version():
            raise schema_error(schema, version)

    def sql(self, template: str) -> str:
        text = self._sql.get(template)
        if text is None:
            text = self._sql[template] = self.q.sql(template)
        return text

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
        result: str = await self.run(ops.enqueue, request, transaction=False)
        return result

    async def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]:
        result: list[str] = await self.run(ops.enqueue_many, options, payloads, transaction=False)
        return result

    async def send_signal(self, workflow_id: str, name: str, payload: str) -> None:
        await self.run(ops.send_signal, workflow_id, name, payload)

    async def get_status(self, execution_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.run(ops.get_status, execution_id, transaction=False)
        return result

    async def list_executions(
        self, queue: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.run(
            ops.list_executions, queue, status, limit, transaction=False
        )
        return result

    async def steps_of(self, workflow_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.run(ops.steps_of, workflow_id, transaction=False)
        return result

    async def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = asyncio.Event()

        def on_done(conn: object, pid: int, channel: str, payload: object) -> None:
            if payload == execution_id:
                finished.set()

        async with self.pool.acquire() as conn:
            # Listen before the first look, so an end between the two is not missed.
            await conn.add_listener(self.q.done_channel, on_done)
            try:
                delay = 0.01
                while True:
                    status = await self._drive(conn, ops.get_status(execution_id))
                    if status["status"] in ops.FINAL_STATUSES:
                        return status
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"execution {execution_id} still {status['status']} after {timeout} s"
                        )
                    # Workflows announce their end; jobs and activities are polled, backing
                    # off to 0.25 s.
                    pause = delay if remaining is None else min(delay, remaining)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(finished.wait(), pause)
                    finished.clear()
                    delay = min(delay * 1.5, 0.25)
            finally:
                await conn.remove_listener(self.q.done_channel, on_done)

    async def cancel(self, execution_id: str) -> str:
        result: str = await self.run(ops.cancel, execution_id)
        return result

    # ---- the worker's side ---------------------------------------------------------------

    async def pump(
        self,
        worker_id: str,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        known_versions: dict[str, int] | None = None,
        conn: Any = None,
        resume_sticky: bool = False,
    ) -> tuple[set[str], list[Claimed]]:
        """Record outcomes and claim up to ``limit`` executions, in one statement.

        With ``resume_sticky``, a waiting workflow that one of the outcomes resolves and that
        this worker holds in memory is claimed back at once (beyond ``limit``: the caller
        counts the slots such outcomes free). Returns the ids whose outcome was recorded (their
        claim still held) and what was claimed.
        """
        names = list(known_versions or {})
        args = (
            [o.id for o in outcomes],
            [o.lease for o in outcomes],
            [o.status for o in outcomes],
            [o.result for o in outcomes],
            [o.error for o in outcomes],
            [o.retry_delay for o in outcomes],
            list(queues),
            limit,
            worker_id,
            names,
            [known_versions[n] for n in names] if known_versions else [],
            resume_sticky,
        )
        # Nothing to record (an idle worker woken for new work): the lighter claim alone.
        if not outcomes and conn is None:
            return set(), await self._claim_only(args[6:11])
        if conn is not None:
            rows = await conn.fetch(self.sql(Q.PUMP), *args)
        else:
            rows = await self._fetch_retrying(Q.PUMP, args)
        recorded = set(rows[0]["recorded"] or ()) if rows else set()
        return recorded, [_claimed(row) for row in rows if row["id"] is not None]

    async def _fetch_retrying(self, template: str, args: Sequence[Any]) -> list[Any]:
        """One statement on a pooled connection, again when it lost a deadlock or conflict."""
        for attempt in range(5):
            try:
                rows: list[Any] = await self.pool.fetch(self.sql(template), *args)
                return rows
            except _RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _claim_only(self, params: tuple[Any, ...]) -> list[Claimed]:
        """A round with nothing to record (an idle worker woken): the claim alone.

        It runs on a connection of its own that commits without waiting for the WAL flush: a
        claim lost in a crash of PostgreSQL only makes the execution runnable again, which
        recovery does anyway, and every outcome recorded later flushes the claim before it.
        That wait was on the path from enqueue to start.
        """
        async with self._claim_lock:
            if self._claim_conn is None or self._claim_conn.is_closed():
                self._claim_conn = await asyncpg.connect(
                    self.dsn, timeout=10, server_settings=_SESSION | {"synchronous_commit": "off"}
                )
            try:
                rows = await self._claim_conn.fetch(self.sql(Q.CLAIM), *params)
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
        row at most: see queries.RELEASE)."""
        return await self.release_id(claimed.id, claimed.lease, worker_id, delay)

    async def release_id(
        self, execution_id: str, lease: int, worker_id: str, delay: float = 0.0
    ) -> bool:
        row = await self.pool.fetchrow(self.sql(Q.RELEASE), execution_id, lease, delay, worker_id)
        return row is not None

    async def take_handoff(
        self, execution_id: str, worker_id: str, conn: asyncpg.Connection | None = None
    ) -> Claimed | None:
        """The job handed to ``worker_id`` (see queries.ENQUEUE), if the table says it was.

        ``conn``: the connection the notification came on, idle otherwise, which saves a pool
        checkout on the pickup path.
        """
        source: Any = self.pool if conn is None else conn
        row = await source.fetchrow(self.sql(Q.HANDED_OVER), execution_id, worker_id)
        return None if row is None else _claimed(row)

    async def cancel_requested(self, claimed: Claimed, worker_id: str) -> bool:
        """Whether a cancel of ``claimed`` (held by ``worker_id``) was asked for in the table."""
        return bool(
            await self.pool.fetchval(
                self.sql(Q.CANCEL_REQUESTED), claimed.id, claimed.lease, worker_id
            )
        )

    async def running_here(self, worker_id: str) -> set[tuple[str, int]]:
        """The executions the database says ``worker_id`` runs, as (id, lease)."""
        rows = await self.pool.fetch(self.sql(Q.RUNNING_HERE), worker_id)
        return {(row["id"], row["lease"]) for row in rows}

    async def load_history(self, workflow_id: str) -> list[StepRecord]:
        rows = await self.pool.fetch(self.sql(Q.LOAD_HISTORY), workflow_id)
        return [step_record(row) for row in rows]

    async def apply_activation(
        self,
        claimed: Claimed,
        worker_id: str,
        *,
        number: int,
        delivered: Sequence[int],
        commands: Sequence[StepCommand],
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
        eager_queues: frozenset[str],
        eager_slots: int,
    ) -> ActivationResult:
        """Write one activation (one round trip while the workflow goes on), fenced on its claim."""
        steps, children = self.step_rows(claimed.queue, number, commands, eager_queues, eager_slots)
        signals = [c.name for c in commands if isinstance(c, WaitSignal)]
        args = (
            claimed.id,
            claimed.lease,
            worker_id,
            claimed.wakeups,
            number,
            list(delivered),
            *_columns(steps, 8),
            *_columns(children, 12),
            signals,
            status,
            result,
            None if error is None else codec.encode(error),
        )
        for attempt in range(5):
            try:
                async with self.pool.acquire() as conn:
                    if status == "blocked":
                        final = await conn.fetchval(self.sql(Q.APPLY_ACTIVATION), *args)
                    else:
                        async with conn.transaction():
                            final = await conn.fetchval(self.sql(Q.APPLY_ACTIVATION), *args)
                            if final in ("completed", "failed"):
                                # What the workflow started and never waited for ends with it.
                                await self._drive(conn, _close_children(claimed.id))
                break
            except _RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        if final is None:
            return ActivationResult(None)
        eager = eager_claims(claimed.id, children) if final in ("waiting", "pending") else []
        return ActivationResult(str(final), eager)

    async def advance(self, worker_id: str, items: Sequence[Advance]) -> list[Advanced]:
        """Apply a batch of :class:`Advance` items in one statement (one commit), in order."""
        # Locks are taken in workflow order, so two batches cannot deadlock on each other;
        # items of one workflow keep their order (a stable sort).
        order = sorted(range(len(items)), key=lambda k: items[k].workflow.id)
        steps: list[tuple[Any, ...]] = []
        children: list[tuple[Any, ...]] = []
        signals: list[tuple[int, str]] = []
        delivered: list[tuple[int, int]] = []
        for n, k in enumerate(order, start=1):
            it = items[k]
            steps.extend((n, *row) for row in it.steps)
            children.extend((n, *row) for row in it.children)
            signals.extend((n, name) for name in it.signals)
            delivered.extend((n, seq) for seq in it.delivered)
        ordered = [items[k] for k in order]
        args = (
            worker_id,
            [it.workflow.id for it in ordered],
            [it.workflow.lease for it in ordered],
            [it.workflow.wakeups for it in ordered],
            [it.number for it in ordered],
            [it.outcome for it in ordered],
            [it.result for it in ordered],
            [it.error for it in ordered],
            [None if it.activity is None else it.activity.id for it in ordered],
            [None if it.activity is None else it.activity.lease for it in ordered],
            [None if it.activity is None else it.activity.parent_seq for it in ordered],
            [it.act_status for it in ordered],
            [it.act_result for it in ordered],
            [it.act_error for it in ordered],
            *_columns(delivered, 2),
            *_columns(signals, 2),
            *_columns(steps, 9),
            *_columns(children, 13),
        )
        rows = await self._fetch_retrying(Q.ADVANCE, args)
        results: list[Advanced] = [Advanced("stale")] * len(items)
        for row in rows:
            k = order[row["item"] - 1]
            outcome = row["outcome"]
            it = items[k]
            eager = (
                eager_claims(it.workflow.id, it.children)
                if outcome in ("waiting", "pending")
                else []
            )
            results[k] = Advanced(outcome, row["lease"], eager)
        return results

    def step_rows(
        self,
        workflow_queue: str,
        number: int,
        commands: Sequence[StepCommand],
        eager_queues: frozenset[str],
        eager_slots: int,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        settings = self.settings
        steps: list[tuple[Any, ...]] = []
        children: list[tuple[Any, ...]] = []
        for c in commands:
            if isinstance(c, ScheduleActivity | StartChild):
                child_id = str(uuid.uuid4())
                o = c.options
                is_wf = isinstance(c, StartChild)
                timeout = o.timeout
                if timeout is None:
                    timeout = (
                        settings.default_workflow_timeout if is_wf else settings.default_timeout
                    )
                retries = o.retries if o.retries is not None else settings.default_retries
                queue = o.queue or workflow_queue
                eager = not is_wf and queue in eager_queues and eager_slots > 0
                eager_slots -= 1 if eager else 0
                children.append(
                    (
                        child_id,
                        "workflow" if is_wf else "activity",
                        c.name,
                        queue,
                        o.priority or 0,
                        c.encoded_args
                        or codec.encode_call(
                            c.args, c.kwargs, max_bytes=settings.max_payload_bytes
                        ),
                        0 if is_wf else retries,
                        None if is_wf else float(timeout),
                        o.version if is_wf else None,
                        float(timeout) if is_wf else None,
                        c.seq,
                        eager,
                    )
                )
                steps.append((c.seq, c.kind, c.name, "scheduled", child_id, None, None, None))
            elif isinstance(c, StartTimer):
                steps.append(
                    (c.seq, "timer", c.name, "scheduled", None, float(c.seconds), None, None)
                )
            elif isinstance(c, WaitSignal):
                secs = None if c.timeout is None else float(c.timeout)
                steps.append((c.seq, "signal", c.name, "scheduled", None, secs, None, None))
            elif isinstance(c, RecordVersion):
                version = codec.encode(c.version)
                steps.append((c.seq, "version", c.name, "completed", None, None, version, number))
        return steps, children

    # ---- timers, deadlines, liveness -------------------------------------------------------

    async def fire_due_steps(self) -> int:
        row = await self.pool.fetchrow(self.sql(Q.FIRE_DUE_STEPS))
        return int(row["fired"]) if row else 0

    async def expire_workflows(self) -> int:
        """Fail workflows past their deadline (and cancel what they started)."""

        async def op() -> int:
            count = 0
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(self.sql(Q.OVERDUE_WORKFLOWS))
                for row in rows:
                    error = codec.error_payload(_timeout_error(), with_traceback=False)
                    await self._drive(conn, ops.finish_tree(row["id"], "failed", error))
                    count += 1
            return count

        for attempt in range(5):
            try:
                return await op()
            except _RETRYABLE:
                if attempt == 4:
                    raise
        return 0

    async def register_worker(
        self, worker_id: str, hostname: str, pid: int, queues: Sequence[str], code_version: str
    ) -> None:
        await self.pool.execute(
            self.sql(Q.REGISTER_WORKER), worker_id, hostname, pid, list(queues), code_version
        )

    async def deregister_worker(self, worker_id: str) -> None:
        await self.pool.execute(self.sql(Q.DEREGISTER_WORKER), worker_id)

    async def offer(
        self, worker_id: str, queues: Sequence[str], lock_key: int, seconds: float
    ) -> None:
        """Offer an idle worker for the next job of ``queues`` for ``seconds`` (see 0003).

        Only while a session of the worker holds the advisory lock ``lock_key``.
        """
        await self.pool.execute(self.sql(Q.OFFER), worker_id, list(queues), lock_key, seconds)

    async def withdraw(self, worker_id: str) -> None:
        await self.pool.execute(self.sql(Q.WITHDRAW), worker_id)

    async def recover(
        self, worker_id: str, timeout: float
    ) -> tuple[list[dict[str, Any]], list[Recovered], list[str]]:
        """Take over the work of dead peers: (dead workers, executions recovered, their
        workflows' queues)."""
        async with self.pool.acquire() as conn, conn.transaction():
            dead = await conn.fetch(self.sql(Q.CLAIM_DEAD_WORKERS), timeout, worker_id)
            dead_ids = [row["worker_id"] for row in dead]
            orphans = await conn.fetch(self.sql(Q.ORPHANED_RUNNING), dead_ids)
            outcomes: list[Outcome] = []
            workflows: list[str] = []
            recovered: list[Recovered] = []
            workflow_queues: list[str] = []
            lost = codec.encode({"type": "WorkerLost", "message": "worker lost"})
            for row in orphans:
                recovered.append(Recovered(row["id"], row["kind"], row["queue"]))
                if row["kind"] == "workflow":
                    workflows.append(row["id"])
                    workflow_queues.append(row["queue"])
                    continue
                retry = row["attempts"] <= row["max_retries"]
                outcomes.append(
                    Outcome(
                        id=row["id"],
                        lease=row["lease"],
                        status="pending" if retry else "failed",
                        error=lost,
                        retry_delay=0.0,
                    )
                )
            if outcomes:
                await self.pump(worker_id, outcomes, (), 0, conn=conn)
            if workflows:
                await conn.fetch(self.sql(Q.REQUEUE_WORKFLOWS), workflows)
        return (
            [dict(row) for row in dead],
            [r for r in recovered if r.kind != "workflow"],
            workflow_queues,
        )

    async def workers_alive(self, timeout: float) -> int:
        return int(await self.pool.fetchval(self.sql(Q.WORKERS_ALIVE), timeout))

    async def queue_depths(
        self, queues: Sequence[str], cap: int = 100_000
    ) -> dict[tuple[str, str], int]:
        """Pending and waiting executions per queue, each counted up to ``cap``."""
        rows = await self.pool.fetch(self.sql(Q.QUEUE_DEPTHS), list(queues), cap)
        depths: dict[tuple[str, str], int] = {}
        for row in rows:
            depths[(row["queue"], "pending")] = row["pending"]
            depths[(row["queue"], "waiting")] = row["waiting"]
        return depths

    async def any_runnable(self, queues: Sequence[str]) -> bool:
        return bool(await self.pool.fetchval(self.sql(Q.ANY_RUNNABLE), list(queues)))


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset is a server round trip (RESET ALL, UNLISTEN *, ...) on every
    # release, doubling the cost of each pooled query; this store sets no session state, and
    # its listeners remove themselves, so only a transaction left open needs undoing.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as the column arrays a set-returning unnest() takes."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


def eager_claims(workflow_id: str, children: list[tuple[Any, ...]]) -> list[Claimed]:
    """The executions an activation started already claimed by its worker (``step_rows``)."""
    return [
        Claimed(
            id=ch[0],
            kind="activity",
            name=ch[2],
            queue=ch[3],
            args=ch[5],
            attempts=1,
            max_retries=ch[6],
            timeout=ch[7],
            lease=1,
            version=None,
            wakeups=0,
            parent_id=workflow_id,
            deadline=None,
            pickup_latency=0.0,
            parent_seq=ch[10],
        )
        for ch in children
        if ch[11]
    ]


def _timeout_error() -> BaseException:
    from workflows.errors import WorkflowTimeoutError

    return WorkflowTimeoutError("workflow ran past its timeout")


def _close_children(workflow_id: str) -> ops.Op[None]:
    """Cancel what a finished workflow started and never waited for (not the workflow itself)."""
    rows = yield ops.Call(
        "SELECT id::text AS id FROM {s}.executions "
        "WHERE parent_id = $1::uuid AND status IN ('pending', 'running', 'waiting')",
        (workflow_id,),
    )
    error = {"type": "ExecutionCancelledError", "message": "parent workflow ended"}
    for row in rows:
        yield from ops.finish_tree(row["id"], "cancelled", error)
    yield ops.Call(
        "UPDATE {s}.workflow_steps SET status = 'cancelled', resolved_at = now() "
        "WHERE workflow_id = $1::uuid AND status = 'scheduled'",
        (workflow_id,),
    )
