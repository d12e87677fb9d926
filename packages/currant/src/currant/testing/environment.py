"""A test environment: a schema of its own on a real PostgreSQL, a worker in the test's event
loop, and virtual time that skips ahead whenever nothing else can make progress.

    async with Environment(["orders"], database_url=admin_url) as env:
        result = await env.run(process_order, "o-1", 10)   # a day-long wait: milliseconds

While it is open, the process's ``WORKFLOWS_DATABASE_URL`` and ``WORKFLOWS_SCHEMA`` point at
its schema, so the code under test enqueues, signals and reads there with the public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, overload

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

import workflows
from currant.testing import clock
from workflows import codec, executions
from workflows.api import REGISTRY, Function
from workflows.config import Settings, configured
from workflows.errors import WorkflowsError
from workflows.ids import ExecutionId, ResultTypeMismatch
from workflows_postgres import client
from workflows_worker.worker import Worker

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# How often the clock looks for a moment when nothing can happen until the next due time, and
# how long that must hold (two looks) before it jumps: the worker acts within a poll.
_LOOK_EVERY = 0.01
_POLL = 0.02
FINAL = ("completed", "failed", "cancelled")
# The settings the environment points at itself through the process's variables.
_POINTED = ("database_url", "schema", "quiet_embedded")


class TestEnvironmentError(WorkflowsError):
    """The environment cannot do what was asked (nothing more will ever happen, a bad call)."""

    __test__ = False  # not a test class, whatever pytest collects


def _queues_of_registry() -> list[str]:
    return sorted({f.queue_name or "default" for f in REGISTRY.values()})


class Environment:
    """See the module. ``queues``: those the worker serves (None: every queue of every
    decorated function imported so far; empty: no worker, for tests that only check what
    code enqueues). ``database_url``: a server to make the schema on (None: found as the
    tests find one, see ``currant.testing.server``). ``time_skipping``: virtual time that jumps
    to the next due moment whenever nothing can happen before it (False: real time;
    ``advance()`` still moves it). ``timeout``: wall-clock seconds ``run()`` waits.
    ``keep_schema``: leave the schema behind, to look at after a failure."""

    __test__ = False

    def __init__(
        self,
        queues: Iterable[str] | None = None,
        *,
        database_url: str | None = None,
        time_skipping: bool = True,
        concurrency: int = 10,
        timeout: float = 30.0,
        keep_schema: bool = False,
    ) -> None:
        self.queues = list(queues) if queues is not None else None
        self.time_skipping = time_skipping
        self.concurrency = concurrency
        # Wall-clock seconds run() waits for an execution to end.
        self.timeout = timeout
        self.keep_schema = keep_schema
        self._admin_url = database_url
        self._server: contextlib.ExitStack | None = None
        self.schema = f"wftest_{secrets.token_hex(5)}"
        self.database_url = ""
        self._saved_env: dict[str, str | None] = {}
        self._saved_config: dict[str, Any] | None = None
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._skipper: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        # Wall-clock time of the last jump or the last sign of progress, for stall reports.
        self._last_progress = time.monotonic()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Environment:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # Nothing left behind (the process's variables, the schema, the worker), and the
            # error that stopped the start is the one raised.
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        if self._admin_url is None:
            from currant.testing.server import server

            self._server = contextlib.ExitStack()
            self._admin_url = self._server.enter_context(server())
        await asyncio.to_thread(self._make_schema, self._admin_url)
        self.database_url = clock.with_search_path(self._admin_url, self.schema)
        for key, value in (
            ("WORKFLOWS_DATABASE_URL", self.database_url),
            ("WORKFLOWS_SCHEMA", self.schema),
            ("WORKFLOWS_QUIET_EMBEDDED", "1"),
        ):
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        # workflows.configure() wins over the variables: what it set for them would send the
        # code under test to the application's database instead of this schema.
        self._saved_config = configured()
        workflows.configure(
            reset=True,
            **{k: v for k, v in self._saved_config.items() if k not in _POINTED},
        )
        await client.reset_async()
        self._conn = await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, row_factory=dict_row
        )
        queues = self.queues if self.queues is not None else _queues_of_registry()
        if queues:
            settings = dataclasses.replace(
                Settings.current(),
                worker_poll_interval=_POLL,
                worker_heartbeat_interval=1.0,
                worker_heartbeat_timeout=30.0,
                worker_shutdown_grace=5.0,
                worker_max_concurrent=self.concurrency,
            )
            self._worker = Worker(queues, settings=settings)
            self._worker_task = asyncio.create_task(
                self._worker.run(), name="workflows-test-worker"
            )
            while not self._worker.healthy():
                if self._worker_task.done():
                    self._worker_task.result()
                    raise TestEnvironmentError("the test worker stopped as it started")
                await asyncio.sleep(0.005)
        if self.time_skipping:
            self._skipper = asyncio.create_task(self._skip_time(), name="workflows-test-clock")

    async def stop(self) -> None:
        if self._skipper is not None:
            self._skipper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._skipper
        if self._worker is not None and self._worker_task is not None:
            self._worker.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._worker_task, 30)
        if self._conn is not None:
            await self._conn.close()
        await client.reset_async()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._saved_config is not None:
            workflows.configure(reset=True, **self._saved_config)
            self._saved_config = None
        if self._admin_url is not None and not self.keep_schema:
            await asyncio.to_thread(self._drop_schema, self._admin_url)
        if self._server is not None:
            self._server.close()

    def _make_schema(self, admin_url: str) -> None:
        workflows.migrate(database_url=admin_url, schema=self.schema)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL(clock.INSTALL.replace("{s}", "{schema}")).format(
                    schema=sql.Identifier(self.schema)
                )
            )

    def _drop_schema(self, admin_url: str) -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    # ---- time ----------------------------------------------------------------------------------

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text.replace("{s}", "{schema}")).format(schema=sql.Identifier(self.schema))

    async def _one(self, text: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._conn is not None, "the environment is not started"
        cursor = await self._conn.execute(self._sql(text), params)
        row = await cursor.fetchone()
        assert row is not None
        return row

    async def now(self) -> datetime:
        """The environment's time (what ``now()`` is in its schema)."""
        return (await self._one(clock.NOW))["now"]  # type: ignore[no-any-return]

    async def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` on (timers, delays, retries and deadlines come due);
        returns the new time."""
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0 <= seconds <= 100 * 365 * 86400
        ):
            raise TestEnvironmentError(
                f"advance() takes a finite number of seconds from 0 to 100 years, got "
                f"{workflows.errors.preview(seconds)}"
            )
        moved = await self._one(clock.ADVANCE, {"seconds": float(seconds)})
        if self._worker is not None:
            # Its workflows.now() reads the database's time through an offset: moved at once
            # (the heartbeat's reading, perhaps under way, may be of the time before), then
            # measured again.
            await self._worker.sync_clock(moved=float(seconds))
        self._last_progress = time.monotonic()
        return moved["now"]  # type: ignore[no-any-return]

    async def _next_due(self) -> tuple[datetime | None, datetime]:
        row = await self._one(clock.NEXT_DUE)
        return row["due"], row["now"]

    async def _skip_time(self) -> None:
        """Jump to the next due moment whenever, twice in a row, nothing can happen before it."""
        previous: datetime | None = None
        while True:
            await asyncio.sleep(_LOOK_EVERY)
            try:
                due, now = await self._next_due()
            except (psycopg.Error, OSError) as exc:
                log.debug("looking for the next due moment failed: %s", exc)
                previous = None
                continue
            if due is None:
                previous = None
                continue
            if due != previous:
                previous = due
                continue
            if due > now:
                await self.advance(clock.seconds_until(due, now))
            previous = None

    # ---- running -------------------------------------------------------------------------------

    async def run(self, fn: Function[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Enqueue ``fn(*args, **kwargs)``, run it to the end and return its result (or raise
        what ``workflows.get_result`` raises), waiting ``self.timeout`` wall-clock seconds."""
        if not isinstance(fn, Function):
            raise TestEnvironmentError(
                f"run() takes a @job or @workflow function, got {workflows.errors.preview(fn)}"
            )
        execution_id = await fn.queue(*args, **kwargs)
        return await self.result(execution_id)

    @overload
    async def result(self, execution_id: ExecutionId[R], *, timeout: float | None = None) -> R: ...
    @overload
    async def result(
        self, execution_id: ExecutionId[Any], *, timeout: float | None = None
    ) -> ResultTypeMismatch: ...
    @overload
    async def result(self, execution_id: str, *, timeout: float | None = None) -> Any: ...
    async def result(self, execution_id: str, *, timeout: float | None = None) -> Any:
        """The result of ``execution_id`` once it ends (``timeout``: wall-clock seconds,
        default ``self.timeout``); typed as ``workflows.get_result`` is."""
        limit = self.timeout if timeout is None else timeout
        waiting = asyncio.ensure_future(workflows.get_result(execution_id, timeout=limit))
        try:
            while not waiting.done():
                await asyncio.wait({waiting}, timeout=0.25)
                if not waiting.done():
                    await self._check_stalled(execution_id)
            return waiting.result()
        finally:
            waiting.cancel()

    async def _check_stalled(self, execution_id: str) -> None:
        """Raise when nothing will ever happen to ``execution_id``: not final, nothing running
        or due, nothing scheduled, with no worker for its queue, or waiting for a signal
        only the test can send (after a second of that, for a test that sends it from another
        task)."""
        status = await workflows.get_status(execution_id)
        if status["status"] in FINAL:
            return
        if self._worker is None or status["queue"] not in self._worker.queues:
            raise TestEnvironmentError(
                f"{status['kind']} {status['name']} ({execution_id}) is on queue "
                f"{status['queue']!r}, which this environment's worker does not serve "
                f"(it serves {self._worker.queues if self._worker else 'none'})"
            )
        if not self.time_skipping:
            return
        due, _ = await self._next_due()
        busy = await self._one(
            "SELECT EXISTS (SELECT 1 FROM {s}.executions WHERE status IN ('running', 'pending') "
            "OR (status = 'waiting' AND deadline IS NOT NULL)) AS busy"
        )
        if due is None and not busy["busy"]:
            if time.monotonic() - self._last_progress > 1.0:
                raise TestEnvironmentError(
                    f"{status['kind']} {status['name']} ({execution_id}) is {status['status']} "
                    "and nothing is scheduled to wake it: send it a signal, or give "
                    "wait_for_signal a timeout"
                )
        else:
            self._last_progress = time.monotonic()

    # ---- looking -------------------------------------------------------------------------------

    async def enqueued(
        self, fn: Function[..., Any] | str | None = None, *, queue: str | None = None
    ) -> list[dict[str, Any]]:
        """Executions made so far (oldest first), of ``fn`` (a decorated function or its import
        path) and/or on ``queue``; each as ``workflows.get_status`` shows it."""
        name = fn.path if isinstance(fn, Function) else fn
        rows: list[dict[str, Any]] = []
        after = None
        while True:
            page = await executions.list(name=name, queue=queue, after=after, limit=1000)
            rows.extend(page["executions"])
            after = page["next"]
            if after is None:
                return rows[::-1]

    async def assert_enqueued(
        self,
        fn: Function[..., Any] | str,
        *,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        count: int | None = None,
    ) -> list[dict[str, Any]]:
        """Assert that ``fn`` was enqueued (``count`` times, if given) with these ``args`` (the
        whole list), these ``kwargs`` (those given; others may be there) and on ``queue``, each
        only if given; returns the matching executions."""
        name = fn.path if isinstance(fn, Function) else fn
        made = await self.enqueued(name)
        matching = [e for e in made if _matches(e, args, kwargs, queue)]
        wanted = "" if count is None else f"{count} time(s) "
        if (count is None and not matching) or (count is not None and len(matching) != count):
            seen = "; ".join(_describe(e) for e in made) or "none"
            raise AssertionError(
                f"expected {name} enqueued {wanted}with "
                f"{_describe({'args': {'args': args, 'kwargs': kwargs}, 'queue': queue})}; "
                f"found {len(matching)} matching, of {len(made)}: {seen}"
            )
        return matching

    async def history(self, execution_id: str) -> dict[str, Any]:
        """As ``workflows.executions.history``."""
        return await executions.history(execution_id)


def _matches(
    e: dict[str, Any],
    args: Sequence[Any] | None,
    kwargs: dict[str, Any] | None,
    queue: str | None,
) -> bool:
    stored = _decoded(e["args"])
    if args is not None and stored.get("args") != list(args):
        return False
    if kwargs is not None:
        given = stored.get("kwargs") or {}
        if not isinstance(given, dict) or any(
            k not in given or given[k] != v for k, v in kwargs.items()
        ):
            return False
    return queue is None or e["queue"] == queue


def _decoded(shown: Any) -> dict[str, Any]:
    """Stored arguments as the code was called with them (typed values built by the
    process's codec), to compare with what a test expects; {} for what cannot be."""
    try:
        call = codec.current().decode_stored(shown)
    except WorkflowsError:
        return {}
    return call if isinstance(call, dict) else {}


def _describe(e: dict[str, Any]) -> str:
    raw = e.get("args")
    stored: dict[str, Any] = raw if isinstance(raw, dict) else {}
    parts = []
    if stored.get("args") is not None:
        parts.append(f"args={stored['args']!r}")
    if stored.get("kwargs"):
        parts.append(f"kwargs={stored['kwargs']!r}")
    if e.get("queue"):
        parts.append(f"queue={e['queue']!r}")
    return ", ".join(parts) or "anything"
