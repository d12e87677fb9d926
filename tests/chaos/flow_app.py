"""What the flow-control tests run inside real `currant worker` processes.

Every run of a job writes a row of ``flow_runs`` as its first act (``started``, the database's
``clock_timestamp()``) and stamps ``ended`` as its last, each through a connection of its own
that commits at once: the job's work (its sleep) lies inside [started, ended), so overlaps
counted from the rows are overlaps of what really ran. A run whose process was SIGKILLed keeps
``ended`` NULL; the test ends it at the kill.

``flow_left_running`` notes every move of an execution out of ``running``, with the worker it
left, so a killed run's slot can be followed to the recovery that gave it back.
"""

from __future__ import annotations

import os
import time

import psycopg

from tests.chaos.chaos_app import QUEUE
from workflows import job

OTHER_QUEUE = "chaos-other"
RETRIES = 20

SCHEMA_SQL = """
CREATE TABLE flow_runs (
    run     bigserial PRIMARY KEY,
    tag     text NOT NULL,
    key     text,
    pid     integer NOT NULL,
    started timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended   timestamptz
);
CREATE TABLE flow_left_running (
    id        uuid NOT NULL,
    worker_id uuid,
    status    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION flow_note_left_running() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO flow_left_running (id, worker_id, status)
    VALUES (NEW.id, OLD.worker_id, NEW.status);
    RETURN NULL;
END $$;
CREATE TRIGGER flow_note_left_running AFTER UPDATE OF status ON workflows.executions
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION flow_note_left_running();
"""


def _run(tag: str, key: str | None, seconds: float) -> dict[str, object]:
    with psycopg.connect(
        os.environ["WORKFLOWS_DATABASE_URL"], autocommit=True, connect_timeout=10
    ) as conn:
        row = conn.execute(
            "INSERT INTO flow_runs (tag, key, pid) VALUES (%s, %s, %s) RETURNING run",
            (tag, key, os.getpid()),
        ).fetchone()
        assert row is not None
        time.sleep(seconds)
        conn.execute("UPDATE flow_runs SET ended = clock_timestamp() WHERE run = %s", (row[0],))
    return {"tag": tag, "pid": os.getpid()}


@job(queue=QUEUE, retries=RETRIES)
def span(tag: str, seconds: float) -> dict[str, object]:
    """A run of ``seconds``, recorded; no key, no rate of its own."""
    return _run(tag, None, seconds)


@job(queue=OTHER_QUEUE, retries=RETRIES)
def other_span(tag: str, seconds: float) -> dict[str, object]:
    """The same on the other queue (which no test limits unless it says so)."""
    return _run(tag, None, seconds)


@job(
    queue=QUEUE,
    retries=RETRIES,
    concurrency_key=lambda customer, *a, **kw: f"customer:{customer}",
    concurrency_limit=1,
)
def per_customer(customer: int, tag: str, seconds: float) -> dict[str, object]:
    """Keyed by the decorator (computed at enqueue): one run per customer at a time."""
    return _run(tag, f"customer:{customer}", seconds)


@job(queue=QUEUE, retries=RETRIES, rate_key="api:x")
def call_api(tag: str) -> dict[str, object]:
    """Under the shared rate ``api:x`` (set by the test), on the chaos queue..."""
    return _run(tag, "api:x", 0.0)


@job(queue=OTHER_QUEUE, retries=RETRIES, rate_key="api:x")
def call_api_other(tag: str) -> dict[str, object]:
    """...and on the other queue: one rate across both."""
    return _run(tag, "api:x", 0.0)
