"""A worker's heartbeat, beaten from a thread on a psycopg connection of its own.

A thread, not the event loop: a job that blocks the loop must not get its worker declared
dead while it still runs (workflows_worker.watchdog decides when to stop beating).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from workflows.records import Registration
from workflows_postgres import queries as Q
from workflows_postgres.connect import connect_sync

log = logging.getLogger(__name__)


class PostgresHeart:
    """``workflows.store.Heart``: one connection, opened on the first beat and after a failure."""

    def __init__(self, dsn: str, schema: str, worker_id: str, registration: Registration) -> None:
        self._dsn = dsn
        self._q = Q.Queries.for_schema(schema)
        self._worker_id = worker_id
        self._registration = registration
        self._conn: Any = None

    def _sql(self, name: str) -> str:
        return Q.to_psycopg(self._q.sql(name))

    def beat(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect_sync(self._dsn, autocommit=True)
            conn = self._conn
            row = conn.execute(self._sql("heartbeat"), {"p1": self._worker_id}).fetchone()
            if row is not None:
                return True
            log.warning(
                "worker %s was declared dead by a peer; registering again",
                self._worker_id[:8],
                extra={"worker_id": self._worker_id},
            )
            r = self._registration
            conn.execute(
                self._sql("register_worker"),
                {
                    "p1": self._worker_id,
                    "p2": r.hostname,
                    "p3": r.pid,
                    "p4": list(r.queues),
                    "p5": r.code_version,
                },
            )
            return False
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
