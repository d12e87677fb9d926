"""Virtual time for a test schema.

Every durable time in the store is PostgreSQL's ``now()`` or ``clock_timestamp()``, read by
the statements and the schema's functions: when a timer fires, when a delayed job or a retry
becomes due, when a workflow's deadline passes, how old a heartbeat is. A test schema gets its
own ``now()`` and ``clock_timestamp()``, the server's plus an offset kept in a table of the
schema, and the test's connections put the schema ahead of ``pg_catalog`` on their
``search_path`` (``-c search_path=...`` in the URL's ``options``), so those unqualified calls
resolve to the schema's. Nothing in Python is patched: the worker's own timing (polls,
heartbeat intervals, activity timeouts) stays real.

Column defaults were bound to ``pg_catalog.now()`` when the tables were made: ``created_at`` is
real time. Moving the clock also moves the worker heartbeats and the leader's lease, so a jump
of a day makes no live worker look dead.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

INSTALL = """
CREATE TABLE {s}.test_clock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    skew interval NOT NULL DEFAULT '0'
);
INSERT INTO {s}.test_clock DEFAULT VALUES;
CREATE FUNCTION {s}.now() RETURNS timestamptz LANGUAGE sql STABLE
    AS $$ SELECT pg_catalog.now() + (SELECT skew FROM {s}.test_clock) $$;
CREATE FUNCTION {s}.clock_timestamp() RETURNS timestamptz LANGUAGE sql VOLATILE
    AS $$ SELECT pg_catalog.clock_timestamp() + (SELECT skew FROM {s}.test_clock) $$;
"""

# By how much to move, in seconds ($1); everything that ages with the clock moves with it.
ADVANCE = """
WITH moved AS (
    UPDATE {s}.test_clock SET skew = skew + make_interval(secs => %(seconds)s)
    RETURNING skew
), beats AS (
    UPDATE {s}.worker_heartbeats
    SET last_heartbeat = last_heartbeat + make_interval(secs => %(seconds)s)
    RETURNING 1
), lease AS (
    UPDATE {s}.leader SET expires_at = expires_at + make_interval(secs => %(seconds)s)
    RETURNING 1
)
SELECT now() + make_interval(secs => %(seconds)s) AS now FROM moved
"""

NOW = "SELECT now() AS now"

# The next moment something is due, when nothing can happen before it: NULL while an
# execution runs, something is runnable, a timer is due unfired or a resolved step waits to
# be delivered to its workflow (the worker is about to act), or when nothing is due at all.
NEXT_DUE = """
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM {s}.executions WHERE status = 'running')
      OR EXISTS (SELECT 1 FROM {s}.executions
                 WHERE status = 'pending' AND NOT held AND run_at <= now())
      OR EXISTS (SELECT 1 FROM {s}.workflow_steps
                 WHERE status = 'scheduled' AND fire_at <= now())
      OR EXISTS (SELECT 1 FROM {s}.workflow_steps
                 WHERE delivered_in IS NULL AND status <> 'scheduled')
      OR EXISTS (SELECT 1 FROM {s}.executions
                 WHERE deadline <= now() AND status IN ('pending', 'running', 'waiting'))
    THEN NULL
    ELSE least(
        (SELECT min(run_at) FROM {s}.executions WHERE status = 'pending' AND NOT held),
        (SELECT min(fire_at) FROM {s}.workflow_steps WHERE status = 'scheduled'),
        (SELECT min(deadline) FROM {s}.executions
         WHERE status IN ('pending', 'running', 'waiting')))
    END AS due,
    now() AS now
"""


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections resolve unqualified functions in ``schema`` first."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    query.append(("options", f"-c search_path={schema},pg_catalog"))
    # %20, not '+': libpq reads a URI's query without form decoding.
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def seconds_until(due: datetime, now: datetime) -> float:
    return max((due - now).total_seconds(), 0.0)
