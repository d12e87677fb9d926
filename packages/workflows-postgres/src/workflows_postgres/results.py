"""Waiting for results: every waiter of a store shares one listening connection.

A waiter registers its execution id, looks once (it may have ended already), and sleeps until
the watcher wakes it; it then reads the status again (one short query) and returns it if it
is final. No waiter holds a connection while it sleeps: a web app with many requests waiting
for results must still be able to enqueue (a pooled connection held per waiter exhausted the
pool).

The watcher LISTENs on the done channel only while someone waits, on a session whose
``application_name`` is the channel's name (``<schema>_done``). Workflows announce their end
there (activate() in 0006), cancels too (``cancel_tree``), and finished root jobs in batches
(the ``pump`` statement), those only while such a session exists: a commit that notifies
takes the notification queue's lock until it is flushed, which a drain with nobody waiting
should not pay. A payload holds one id or several separated by commas. A
notification is a hint: it is lost while the listener reconnects, and a row finished some
other way sends none. So the watcher also asks, once per tick, which of all the ids waited on
have ended (``finished_among``: one query whatever the number of waiters). The tick starts at
``FIRST_TICK`` when waiting begins and doubles up to ``WORKFLOWS_WORKER_POLL_INTERVAL``; after
the listener (re)connects the watcher looks at once. The listening connection is kept for
``LINGER`` seconds after the last waiter left (UNLISTENed), then closed.

asyncpg connections belong to one event loop: :class:`ResultWatcher` serves one
:class:`~workflows_postgres.store.PostgresStore` (one per loop through ``async_store()``).
:class:`SyncResultWatcher` serves a :class:`~workflows_postgres.sync.SyncStore` from a daemon
thread with a psycopg connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from workflows.errors import ConfigurationError, DatabaseUnavailableError
from workflows_postgres import ops, pooler
from workflows_postgres.connect import first_line

if TYPE_CHECKING:
    import asyncpg
    import psycopg

    from workflows_postgres.store import PostgresStore
    from workflows_postgres.sync import SyncStore

log = logging.getLogger(__name__)

FIRST_TICK = 0.05
LINGER = 30.0
# Reconnecting the listener: from 0.1 s, doubling, at most this.
_MAX_BACKOFF = 5.0


def done_ids(payload: str) -> list[str]:
    """The execution ids a notification on the done channel names (one, or several by commas)."""
    return payload.split(",") if payload else []


def _deadline(timeout: Any) -> float | None:
    """When a wait of ``timeout`` seconds ends (monotonic clock); None: never.

    A NaN would reach the event loop's timer heap, where it compares false with every other
    timer; a number at or below zero times out after the first look, as it always has.
    """
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or (isinstance(timeout, float) and math.isnan(timeout))
    ):
        raise ConfigurationError(
            f"timeout must be a number of seconds or None, got {str(timeout)[:40]!r}"
        )
    if math.isinf(timeout) and timeout > 0:
        return None
    return time.monotonic() + timeout


def _closed(execution_id: str) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"the store was closed while waiting for execution {execution_id}"
    )


def _timed_out(execution_id: str, status: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"execution {execution_id} still {status} after {timeout} s")


async def _until_set(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` have passed.

    Not ``wait_for(event.wait())``: on Python 3.11 that swallows a cancellation arriving as the
    event is set, and the loop's end (asyncio.run cancelling this task) then waited ``LINGER``.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((waiter,), timeout=seconds)
    finally:
        waiter.cancel()


class _Registry:
    """Ids waited on and their waiters (futures or events): any object with a wake."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[Any]] = {}

    def add(self, execution_id: str, waiter: Any) -> bool:
        """Register; whether it is the first waiter of all."""
        first = not self.waiters
        self.waiters.setdefault(execution_id, set()).add(waiter)
        return first

    def remove(self, execution_id: str, waiter: Any) -> bool:
        """Unregister; whether nobody waits any more."""
        group = self.waiters.get(execution_id)
        if group is not None:
            group.discard(waiter)
            if not group:
                del self.waiters[execution_id]
        return not self.waiters

    def count(self) -> int:
        return sum(len(group) for group in self.waiters.values())

    def ended(self, ids: Iterable[str]) -> list[Any]:
        """The waiters of ``ids``."""
        found: list[Any] = []
        for execution_id in ids:
            found.extend(self.waiters.get(execution_id, ()))
        return found


class ResultWatcher:
    """Every ``wait_finished`` of one asyncpg store (one event loop)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._registry = _Registry()
        self._task: asyncio.Task[None] | None = None
        # Set when the first waiter comes or the last one leaves: the watcher's loop reacts.
        self._changed = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._subscribed = False
        self._closed = False
        # First looks not taken yet (see _first_look) and the task that takes them.
        self._looks: list[tuple[str, asyncio.Future[str | None]]] = []
        self._looker: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Whether the done channel is listened to now."""
        return self._subscribed and self._connected()

    def _connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed()

    @property
    def waiting(self) -> int:
        """How many waits are registered (for tests and metrics)."""
        return self._registry.count()

    async def wait(self, execution_id: str, timeout: float | None) -> dict[str, Any]:
        key = ops._check_id(execution_id)
        deadline = _deadline(timeout)
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        self._add(key, woken)
        try:
            # Registered before each look: an end after the look wakes this waiter.
            current = await self._first_look(key)
            while True:
                if current is None:
                    status = await self._store.get_status(execution_id)
                    if status["status"] in ops.FINAL_STATUSES:
                        return status
                    current = status["status"]
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _timed_out(execution_id, current, timeout)
                await asyncio.wait((woken,), timeout=remaining)
                if woken.done():
                    woken.result()  # the store closed: raises
                    # Woken by a hint (or one for a retry of the same id).
                    self._registry.remove(key, woken)
                    woken = loop.create_future()
                    self._add(key, woken)
                # Woken or timed out: look again (an end at the deadline is still returned).
                current = None
        finally:
            if self._registry.remove(key, woken):
                self._changed.set()

    async def _first_look(self, key: str) -> str | None:
        """The status of ``key`` while it is not final, or None: the caller reads it whole
        (final, not found, or the only wait begun in this turn of the loop).

        The waits that begin together look together, in one query: 1,000 get_result() calls
        begun at once read their 1,000 statuses one by one through the pool before, and an
        enqueue of the same process waited behind all of them (about 0.35 s).
        """
        loop = asyncio.get_running_loop()
        look: asyncio.Future[str | None] = loop.create_future()
        self._looks.append((key, look))
        if self._looker is None or self._looker.done():
            self._looker = loop.create_task(self._look_together())
        return await look

    async def _look_together(self) -> None:
        await asyncio.sleep(0)  # the waits begun in this turn of the loop join the first batch
        while self._looks:
            batch, self._looks = self._looks, []
            found: dict[str, str] = {}
            try:
                if len(batch) > 1:
                    found = await self._store.run(
                        ops.statuses_among, list({key for key, _ in batch}), transaction=False
                    )
            except Exception as exc:
                # Each wait then looks for itself and gets its own error, if any.
                log.debug("first looks together failed (%s)", first_line(exc))
            finally:
                # Cancelled too (the store closing): no wait is left without its look.
                for key, look in batch:
                    if look.done():
                        continue
                    if self._closed:
                        look.set_exception(_closed(key))
                        continue
                    status = found.get(key)
                    look.set_result(
                        None if status is None or status in ops.FINAL_STATUSES else status
                    )

    def _add(self, key: str, woken: asyncio.Future[None]) -> None:
        if self._closed:
            raise _closed(key)
        if self._registry.add(key, woken):
            self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _wake(self, ids: Iterable[str]) -> None:
        for woken in self._registry.ended(ids):
            if not woken.done():
                woken.set_result(None)

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake(done_ids(str(payload)))

    def _lost(self, conn: object) -> None:
        self._subscribed = False
        self._changed.set()

    async def _run(self) -> None:
        poll = self._store.settings.worker_poll_interval
        # Through transaction pooling the pool's polling alone (see pooler.listens).
        listens = pooler.listens(self._store.settings)
        tick = FIRST_TICK
        backoff = 0.1
        next_connect = 0.0
        try:
            while not self._closed:
                if not self._registry.waiters:
                    # Cleared before the UNLISTEN's round trip: a waiter that comes during it
                    # sets the event again, and the watcher does not sleep LINGER over it.
                    self._changed.clear()
                    await self._unlisten()
                    await _until_set(self._changed, LINGER)
                    if not self._registry.waiters:
                        return
                    tick = FIRST_TICK
                    continue
                if listens and not self._subscribed and time.monotonic() >= next_connect:
                    try:
                        await self._listen()
                        backoff = 0.1
                    except Exception as exc:
                        self._drop()
                        log.warning(
                            "results listener cannot connect (%s); again in %.1f s",
                            first_line(exc),
                            backoff,
                        )
                        next_connect = time.monotonic() + backoff
                        backoff = min(backoff * 2, _MAX_BACKOFF)
                # Also right after (re)connecting: what ended while nobody listened.
                await self._check()
                self._changed.clear()
                await _until_set(self._changed, tick)
                tick = min(tick * 2, poll)
        finally:
            self._drop()

    async def _listen(self) -> None:
        from workflows_postgres.store import _SESSION

        if not self._connected():
            self._conn = await pooler.connect(
                self._store.dsn,
                self._store.settings.pooler,
                _SESSION,
                # Named after the channel: the pump announces jobs only while such a session
                # exists (see the statement).
                application_name=self._store.q.done_channel,
                timeout=10,
            )
            # A lost session is noticed at once, not at the next tick's failure.
            self._conn.add_termination_listener(self._lost)
        assert self._conn is not None
        await self._conn.add_listener(self._store.q.done_channel, self._notified)
        self._subscribed = True

    async def _unlisten(self) -> None:
        if self.listening:
            assert self._conn is not None
            self._subscribed = False
            try:
                await self._conn.remove_listener(self._store.q.done_channel, self._notified)
            except Exception:
                self._drop()

    async def _check(self) -> None:
        ids = list(self._registry.waiters)
        if not ids:
            return
        statement = self._store.sql("finished_among")
        try:
            # The listener's own connection while it lives (the pool stays for the callers).
            if self.listening:
                assert self._conn is not None
                rows = await self._conn.fetch(statement, ids, timeout=10)
            else:
                # Bounded: a pool its callers keep busy must not stall every waiter's tick.
                rows = await asyncio.wait_for(self._store.pool.fetch(statement, ids), 10)
        except Exception as exc:
            if self.listening:
                self._drop()
            log.warning("results check failed (%s); again at the next tick", first_line(exc))
            return
        self._wake(row["id"] for row in rows)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._subscribed = False
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        """Stop watching; every waiter gets a :class:`DatabaseUnavailableError`."""
        self._closed = True
        for key, group in list(self._registry.waiters.items()):
            for woken in group:
                if not woken.done():
                    woken.set_exception(_closed(key))
        for key, look in self._looks:
            if not look.done():
                look.set_exception(_closed(key))
        self._looks = []
        for task in (self._task, self._looker):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._looker = None
        self._drop()


class SyncResultWatcher:
    """Every ``wait_finished`` of one psycopg store: a daemon thread listens for all threads."""

    def __init__(self, store: SyncStore) -> None:
        self._store = store
        self._registry = _Registry()
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._subscribed = False
        self._closed = False

    @property
    def waiting(self) -> int:
        """How many waits are registered (for tests and metrics)."""
        with self._lock:
            return self._registry.count()

    def wait(self, execution_id: str, timeout: float | None) -> dict[str, Any]:
        key = ops._check_id(execution_id)
        deadline = _deadline(timeout)
        woken = threading.Event()
        self._add(key, woken)
        try:
            while True:
                status = self._store.get_status(execution_id)
                if status["status"] in ops.FINAL_STATUSES:
                    return status
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _timed_out(execution_id, status["status"], timeout)
                woken.wait(remaining)
                if self._closed:
                    raise _closed(execution_id)
                # Cleared before the next look: an end after it sets it again.
                woken.clear()
        finally:
            with self._lock:
                if self._registry.remove(key, woken):
                    self._changed.set()

    def _add(self, key: str, woken: threading.Event) -> None:
        with self._lock:
            if self._closed:
                raise _closed(key)
            if self._registry.add(key, woken):
                self._changed.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="workflows-results", daemon=True
                )
                self._thread.start()

    def _wake(self, ids: Iterable[str]) -> None:
        with self._lock:
            for woken in self._registry.ended(ids):
                woken.set()

    def _run(self) -> None:
        poll = self._store.settings.worker_poll_interval
        tick = FIRST_TICK
        next_check = 0.0
        backoff = 0.1
        next_connect = 0.0
        try:
            while not self._closed:
                with self._lock:
                    ids = list(self._registry.waiters)
                    if not ids:
                        self._changed.clear()
                if not ids:
                    self._unlisten()
                    self._changed.wait(LINGER)
                    with self._lock:
                        if not self._registry.waiters or self._closed:
                            # Under the lock: a thread started after it must find no
                            # connection of this one's.
                            self._thread = None
                            self._drop()
                            return
                    tick, next_check = FIRST_TICK, 0.0
                    continue
                if not self._subscribed and time.monotonic() >= next_connect:
                    try:
                        self._listen()
                        backoff = 0.1
                        next_check = 0.0  # what ended while nobody listened
                    except Exception as exc:
                        self._drop()
                        log.warning(
                            "results listener cannot connect (%s); again in %.1f s",
                            first_line(exc),
                            backoff,
                        )
                        next_connect = time.monotonic() + backoff
                        backoff = min(backoff * 2, _MAX_BACKOFF)
                if self._conn is None:
                    time.sleep(max(0.0, min(0.5, next_connect - time.monotonic())))
                    continue
                try:
                    if time.monotonic() >= next_check:
                        self._check(ids)
                        next_check = time.monotonic() + tick
                        tick = min(tick * 2, poll)
                    # At most half a second: a close or the last waiter leaving is seen soon.
                    wait = min(0.5, max(0.0, next_check - time.monotonic()))
                    for note in self._conn.notifies(timeout=wait):
                        self._wake(done_ids(note.payload))
                except Exception as exc:
                    log.warning("results listener lost (%s); reconnecting", first_line(exc))
                    self._drop()
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    self._drop()

    def _listen(self) -> None:
        from workflows_postgres.connect import connect_sync

        settings = self._store.settings
        if not pooler.listens(settings):
            # Through transaction pooling: a connection to poll on, its notifies() a sleep.
            if self._conn is None:
                self._conn = connect_sync(
                    self._store.dsn, autocommit=True, **pooler.psycopg_options(settings.pooler)
                )
            self._subscribed = True
            return
        if self._conn is None:
            self._conn = connect_sync(
                self._store.dsn,
                autocommit=True,
                application_name=self._store.q.done_channel,
            )
        self._conn.execute(self._store.sql("listen"))
        self._subscribed = True

    def _unlisten(self) -> None:
        if self._conn is not None and self._subscribed:
            if not pooler.listens(self._store.settings):
                self._subscribed = False
                return
            self._subscribed = False
            try:
                self._conn.execute(self._store.sql("unlisten"))
            except Exception:
                self._drop()

    def _check(self, ids: list[str]) -> None:
        assert self._conn is not None
        rows = self._conn.execute(self._store.sql("finished_among"), {"p1": ids}).fetchall()
        self._wake(row[0] for row in rows)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._subscribed = False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Stop watching; every waiter gets a :class:`DatabaseUnavailableError`. The thread
        ends at its next tick (it closes its own connection)."""
        with self._lock:
            self._closed = True
            for group in self._registry.waiters.values():
                for woken in group:
                    woken.set()
        self._changed.set()
