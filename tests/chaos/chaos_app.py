"""What the chaos tests run inside real `currant worker` processes.

Every job and activity writes its side effect durably (a row in ``chaos_side_effects``, through
a connection of its own) before it returns, so "every side effect happened at least once" can be
checked after any number of processes were killed, and each returns the token of the row it
wrote, so a recorded result can be traced to the run that produced it. Workflows return every
step result they were handed, to be compared with what ``workflow_steps`` recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from workflows import activity, job, sleep, wait_for_signal, workflow

QUEUE = "chaos"
# Enough that no execution runs out of attempts however often the dice kill its worker.
RETRIES = 50

SCHEMA_SQL = """
CREATE TABLE chaos_side_effects (
    key   text NOT NULL,
    token text NOT NULL,
    pid   integer NOT NULL,
    at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON chaos_side_effects (key);
-- Every move of an execution to a final status: a second one would be a second completion.
CREATE TABLE chaos_final_transitions (
    id         uuid NOT NULL,
    old_status text NOT NULL,
    status     text NOT NULL,
    lease      bigint NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION chaos_note_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_final_transitions (id, old_status, status, lease)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.lease);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_note_final AFTER UPDATE OF status ON workflows.executions
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION chaos_note_final();
-- A row can also be inserted final: an activity a worker ran ahead of the write that starts
-- it is inserted as it ended (migration 0016). That is its one move to a final status.
CREATE FUNCTION chaos_note_inserted_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_final_transitions (id, old_status, status, lease)
    VALUES (NEW.id, 'inserted', NEW.status, NEW.lease);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_note_inserted_final AFTER INSERT ON workflows.executions
    FOR EACH ROW WHEN (NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION chaos_note_inserted_final();
-- A row deleted never ended as far as anyone can see (a write deletes the children it admitted
-- for a run that broke off): its moves are forgotten with it.
CREATE FUNCTION chaos_forget_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chaos_final_transitions WHERE id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_forget_deleted AFTER DELETE ON workflows.executions
    FOR EACH ROW EXECUTE FUNCTION chaos_forget_deleted();
-- Every attempt of a job or activity counted as lost with its worker (a release, which also
-- leaves 'running', gives the attempt back instead): one claim must be recovered only once.
CREATE TABLE chaos_lost_attempts (
    id    uuid NOT NULL,
    lease bigint NOT NULL,
    at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION chaos_note_lost() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_lost_attempts (id, lease) VALUES (NEW.id, NEW.lease);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_note_lost AFTER UPDATE OF status ON workflows.executions
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status IN ('pending', 'failed')
          AND NEW.kind <> 'workflow' AND NEW.attempts = OLD.attempts
          AND NEW.error ->> 'type' = 'WorkerLost')
    EXECUTE FUNCTION chaos_note_lost();
-- When each heartbeat row went (a recovery, or a worker's own deregistration).
CREATE TABLE chaos_heartbeat_deletes (
    worker_id uuid NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION chaos_note_heartbeat_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_heartbeat_deletes (worker_id) VALUES (OLD.worker_id);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_note_heartbeat_delete AFTER DELETE ON workflows.worker_heartbeats
    FOR EACH ROW EXECUTE FUNCTION chaos_note_heartbeat_delete();
"""


def record_side_effect(key: str) -> str:
    token = uuid.uuid4().hex
    with psycopg.connect(
        os.environ["WORKFLOWS_DATABASE_URL"], autocommit=True, connect_timeout=10
    ) as conn:
        conn.execute(
            "INSERT INTO chaos_side_effects (key, token, pid) VALUES (%s, %s, %s)",
            (key, token, os.getpid()),
        )
    return token


@job(queue=QUEUE, retries=RETRIES)
def work(key: str, seconds: float) -> dict[str, Any]:
    token = record_side_effect(key)
    time.sleep(seconds)
    return {"key": key, "token": token, "pid": os.getpid()}


@job(queue=QUEUE, retries=0)
async def outlive(key: str, seconds: float) -> dict[str, Any]:
    """No retry to spare, on the event loop (no thread to wait for): it must not be lost."""
    token = uuid.uuid4().hex
    conn = await psycopg.AsyncConnection.connect(
        os.environ["WORKFLOWS_DATABASE_URL"], autocommit=True, connect_timeout=10
    )
    async with conn:
        await conn.execute(
            "INSERT INTO chaos_side_effects (key, token, pid) VALUES (%s, %s, %s)",
            (key, token, os.getpid()),
        )
    await asyncio.sleep(seconds)
    return {"key": key, "token": token, "pid": os.getpid()}


@activity(retries=RETRIES, timeout=120)
def step(key: str, seconds: float) -> str:
    token = record_side_effect(key)
    time.sleep(seconds)
    return token


def burn(rounds: int) -> str:
    """Deterministic CPU work, so a replay takes long enough for a kill to land in it."""
    digest = b""
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@workflow(queue=QUEUE, timeout=900)
async def pipeline(key: str, steps: int, seconds: float, rounds: int, nap: float) -> dict[str, Any]:
    seen = []
    for i in range(steps):
        burn(rounds)
        seen.append(await step.run(f"{key}/{i}", seconds))
        if nap:
            await sleep(nap)
    burn(rounds)
    go = await wait_for_signal("go")
    return {"key": key, "steps": seen, "signal": go}


def hold_here(gate: str | None) -> None:
    """Say this process runs the activation (``gate/started-PID``), then block its event loop
    while ``gate/hold-PID`` exists: the test pauses a worker inside an activation for sure."""
    if gate is None:
        return
    Path(gate, f"started-{os.getpid()}").touch()
    hold = Path(gate, f"hold-{os.getpid()}")
    while hold.exists():
        time.sleep(0.005)


@workflow(queue=QUEUE, timeout=900)
async def three_steps(
    key: str, seconds: float, rounds: int = 0, gate: str | None = None
) -> dict[str, Any]:
    hold_here(gate)
    seen = []
    for i in range(3):
        burn(rounds)
        seen.append(await step.run(f"{key}/{i}", seconds))
    return {"key": key, "steps": seen}


@job(queue=QUEUE, retries=2)
def kill_my_worker(key: str) -> None:
    """Poison: every attempt takes its whole worker process down with it."""
    record_side_effect(key)
    os.kill(os.getpid(), signal.SIGKILL)
