"""A worker's listening session (``workflows.store.Listener``).

One connection, owned here: it LISTENs on the work, cancel and start channels and holds the
advisory lock that makes the worker's offers good (0003: an enqueue hands a job only to a
worker whose session still holds it). Notifications are hints: a handoff is read back from
the table on this same connection before anything runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import asyncpg

from workflows.records import Claimed
from workflows_postgres.connect import first_line

if TYPE_CHECKING:
    from workflows_postgres.store import PostgresStore

log = logging.getLogger(__name__)


def handed_over(payload: str, worker_id: str) -> str | None:
    """The execution id a notification on the start channel says was handed to ``worker_id``.

    Only a hint: any role that can connect may send one.
    """
    import uuid

    target, _, execution_id = payload.partition(" ")
    if target != worker_id or not execution_id:
        return None
    try:
        return str(uuid.UUID(execution_id))
    except ValueError:
        return None


class PostgresListener:
    def __init__(
        self,
        store: PostgresStore,
        worker_id: str,
        *,
        on_work: Callable[[str], None],
        on_cancel: Callable[[str], None],
        on_start: Callable[[str], None],
        on_connected: Callable[[], None],
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._on_work = on_work
        self._on_cancel = on_cancel
        self._on_start = on_start
        self._on_connected = on_connected
        self._conn: asyncpg.Connection | None = None
        # One query at a time on a connection: keep-alives and handoff reads share it.
        self._lock = asyncio.Lock()
        self._lock_key = random.getrandbits(63)
        self._locked = False

    @property
    def alive(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed()

    async def run(self) -> None:
        store = self._store
        q = store.q
        poll = store.settings.worker_poll_interval
        backoff = 0.1
        while True:
            try:
                conn = await asyncpg.connect(store.dsn)
                await conn.add_listener(q.work_channel, self._work)
                await conn.add_listener(q.cancel_channel, self._cancel)
                await conn.add_listener(q.start_channel, self._start)
                # Held as long as this session lives: what makes this worker's offers good.
                while not await conn.fetchval(store.sql("hold_offer_lock"), self._lock_key):
                    self._lock_key = random.getrandbits(63)
                self._locked = True
                self._conn = conn
                backoff = 0.1
                # Whatever was announced while nobody listened: the worker looks now.
                self._on_connected()
                while not conn.is_closed():
                    await asyncio.sleep(poll)
                    with contextlib.suppress(asyncio.TimeoutError):
                        async with self._lock:
                            await conn.execute(store.sql("keep_alive"), timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "listener connection lost (%s); reconnecting in %.1f s",
                    first_line(exc),
                    backoff,
                )
            self._locked = False
            await self._drop()
            await asyncio.sleep(backoff)
            # Capped low: refused connections cost the server nothing, and until this session
            # is back the worker gets no handoff and fails /healthz.
            backoff = min(backoff * 2, 2.0)

    def _work(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._on_work(str(payload))

    def _cancel(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._on_cancel(str(payload))

    def _start(self, conn: object, pid: int, channel: str, payload: object) -> None:
        execution_id = handed_over(str(payload), self._worker_id)
        if execution_id is not None:
            self._on_start(execution_id)

    async def take_handoff(self, execution_id: str) -> Claimed | None:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            async with self._lock:
                return await self._store.take_handoff(execution_id, self._worker_id, conn)
        return await self._store.take_handoff(execution_id, self._worker_id)

    async def offer(self, queues: Sequence[str], seconds: float) -> bool:
        if not self._locked or not self.alive:
            return False
        await self._store.offer(self._worker_id, queues, self._lock_key, seconds)
        return True

    async def withdraw(self) -> None:
        await self._store.withdraw(self._worker_id)

    async def close(self) -> None:
        self._locked = False
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
