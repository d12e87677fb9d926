"""Every SQL statement of the store, by name.

``{s}`` stands for the quoted schema, ``{work}``/``{cancel}``/``{done}`` for the notification
channels.
Parameters are ``$n`` (asyncpg); :func:`to_psycopg` rewrites them for psycopg. jsonb, uuid and
timestamps travel as text in both directions so both drivers see the same values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from workflows.config import validate_schema_name


def quote_ident(name: str) -> str:
    # Only validated identifiers reach here; quoting keeps reserved words safe too.
    return '"' + validate_schema_name(name) + '"'


# A workflow's timeout is stored as its deadline, now() + timeout at the insert that also sets
# created_at to now() (ENQUEUE, ENQUEUE_MANY, a child's in insert_commands): the difference is
# the timeout exactly, to the microsecond an interval holds.
EXECUTION_COLUMNS = """
    e.id::text AS id, e.kind, e.name, e.queue, e.status, e.priority, e.attempts, e.max_retries,
    CASE WHEN e.kind = 'workflow' THEN extract(epoch FROM e.deadline - e.created_at)::float8
         ELSE e.timeout_seconds END AS timeout_seconds,
    e.args::text AS args, e.result::text AS result, e.error::text AS error,
    e.version, e.parent_id::text AS parent_id, e.idempotency_key, e.run_at, e.created_at,
    e.started_at, e.finished_at, e.cancel_requested, e.worker_id::text AS worker_id
"""

# A job to run now ($13: not in a caller's transaction) goes straight to an idle worker that
# offered itself for its queue (see 0003): inserted running under it, and announced on {start}
# as "<worker id> <execution id>". The notification is only a hint: any role that can connect
# may LISTEN and NOTIFY, so it carries nothing confidential and the worker reads the claim from
# the table (HANDED_OVER) before it runs anything. Every other enqueue announces its queue on
# {work}.
ENQUEUE = """
WITH offer AS (
    DELETE FROM {s}.worker_offers o
    WHERE o.worker_id = (SELECT f.worker_id FROM {s}.worker_offers f
                         WHERE f.queues @> ARRAY[$3::text] AND f.expires_at > now()
                         LIMIT 1 FOR UPDATE SKIP LOCKED)
      AND $13::bool AND $1 = 'job' AND $8::timestamptz IS NULL AND COALESCE($9::float8, 0) <= 0
      AND $10::text IS NULL
      -- Free: the worker's listening session is gone, and the worker with it.
      AND NOT pg_try_advisory_xact_lock_shared(o.lock_key)
    RETURNING o.worker_id
), ins AS (
    INSERT INTO {s}.executions AS e
        (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
         idempotency_key, version, deadline, status, worker_id, lease, attempts, started_at)
    SELECT {s}.new_id(), $1, $2, $3, $4, $5::json, $6, $7,
           COALESCE($8::timestamptz, now() + make_interval(secs => COALESCE($9::float8, 0))),
           $10, $11, now() + make_interval(secs => $12::float8),
           CASE WHEN h.worker_id IS NULL THEN 'pending' ELSE 'running' END, h.worker_id,
           CASE WHEN h.worker_id IS NULL THEN 0 ELSE 1 END,
           CASE WHEN h.worker_id IS NULL THEN 0 ELSE 1 END,
           CASE WHEN h.worker_id IS NULL THEN NULL ELSE now() END
    FROM (SELECT 1) one LEFT JOIN offer h ON true
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING e.id, e.run_at, e.worker_id
)
SELECT ins.id::text AS id,
       (SELECT count(*) FROM (
            SELECT CASE WHEN ins.worker_id IS NULL THEN pg_notify('{work}', $3)
                   ELSE pg_notify('{start}', ins.worker_id::text || ' ' || ins.id::text) END
            WHERE ins.run_at <= now()) n) AS notified
FROM ins
"""

FIND_BY_IDEMPOTENCY_KEY = """
SELECT id::text AS id FROM {s}.executions WHERE idempotency_key = $1
"""

# One queue_many(): every run has the same options, so they go as scalars and only the
# arguments as an array (unnesting eleven arrays cost the server as much as the inserts).
ENQUEUE_MANY = """
WITH ins AS (
    INSERT INTO {s}.executions
        (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
         version, deadline)
    SELECT {s}.new_id(), $1, $2, $3, $4, a.args::json, $6, $7,
           COALESCE($8::timestamptz, now() + make_interval(secs => COALESCE($9::float8, 0))),
           $10, now() + make_interval(secs => $11::float8)
    FROM unnest($5::text[]) WITH ORDINALITY AS a(args, ord)
    ORDER BY a.ord
    RETURNING id, run_at
), notified AS (
    SELECT pg_notify('{work}', $3) WHERE EXISTS (SELECT 1 FROM ins WHERE run_at <= now())
)
SELECT id::text AS id, (SELECT count(*) FROM notified) AS notified FROM ins
"""

STATUS = "SELECT " + EXECUTION_COLUMNS + " FROM {s}.executions e WHERE e.id = $1::uuid"

STEPS_OF = """
SELECT seq, kind, name, status, execution_id::text AS execution_id, result::text AS result,
       error::text AS error, fire_at
FROM {s}.workflow_steps WHERE workflow_id = $1::uuid ORDER BY seq
"""

LIST = (
    "SELECT "
    + EXECUTION_COLUMNS
    + """
FROM {s}.executions e
WHERE ($1::text IS NULL OR e.queue = $1) AND ($2::text IS NULL OR e.status = $2)
ORDER BY e.created_at DESC, e.id
LIMIT $3
"""
)

LOCK_EXECUTION = """
SELECT id::text AS id, kind, status, queue, parent_id::text AS parent_id, parent_seq
FROM {s}.executions WHERE id = $1::uuid FOR UPDATE
"""

INSERT_SIGNAL = """
INSERT INTO {s}.workflow_signals (workflow_id, name, payload) VALUES ($1::uuid, $2, $3::json)
"""

# Hand the oldest unconsumed signal of the step's name to the first open wait for it.
DELIVER_SIGNAL = """
WITH step AS (
    SELECT seq FROM {s}.workflow_steps
    WHERE workflow_id = $1::uuid AND kind = 'signal' AND name = $2 AND status = 'scheduled'
    ORDER BY seq LIMIT 1
), sig AS (
    UPDATE {s}.workflow_signals SET consumed_seq = (SELECT seq FROM step)
    WHERE id = (SELECT id FROM {s}.workflow_signals
                WHERE workflow_id = $1::uuid AND name = $2 AND consumed_seq IS NULL
                ORDER BY id LIMIT 1)
      AND EXISTS (SELECT 1 FROM step)
    RETURNING payload, consumed_seq
)
UPDATE {s}.workflow_steps st
SET status = 'completed', result = sig.payload, resolved_at = now()
FROM sig
WHERE st.workflow_id = $1::uuid AND st.seq = sig.consumed_seq
RETURNING st.seq
"""

# A step of the workflow got resolved: count it, and make a waiting workflow runnable.
WAKE_WORKFLOW = """
WITH w AS (
    UPDATE {s}.executions
    SET wakeups = wakeups + 1,
        status = CASE WHEN status = 'waiting' THEN 'pending' ELSE status END,
        run_at = CASE WHEN status = 'waiting' THEN now() ELSE run_at END
    WHERE id = $1::uuid
    RETURNING status, queue
)
SELECT count(*) AS notified FROM w, LATERAL (SELECT pg_notify('{work}', w.queue)) n
WHERE w.status = 'pending'
"""

# Mark an execution and every descendant cancelled; running ones are told to stop.
CANCEL_TREE = """
WITH RECURSIVE tree AS (
    SELECT id FROM {s}.executions WHERE id = $1::uuid
    UNION ALL
    SELECT c.id FROM {s}.executions c JOIN tree t ON c.parent_id = t.id
), upd AS (
    UPDATE {s}.executions e
    SET cancel_requested = true,
        status = CASE WHEN e.status = 'running' AND e.kind <> 'workflow' THEN 'running'
                      WHEN e.id = $1::uuid THEN $2
                      ELSE 'cancelled' END,
        error = CASE WHEN e.id = $1::uuid THEN $3::jsonb
                     ELSE '{{"type": "ExecutionCancelledError", "message": "parent ended"}}'::jsonb
                END,
        finished_at = CASE WHEN e.status = 'running' AND e.kind <> 'workflow' THEN NULL
                           ELSE now() END,
        worker_id = CASE WHEN e.status = 'running' AND e.kind <> 'workflow' THEN e.worker_id
                         ELSE NULL END
    FROM tree
    WHERE e.id = tree.id AND e.status IN ('pending', 'running', 'waiting')
    RETURNING e.id, e.status
), steps AS (
    UPDATE {s}.workflow_steps st SET status = 'cancelled', resolved_at = now()
    WHERE st.workflow_id IN (SELECT id FROM tree) AND st.status = 'scheduled'
    RETURNING 1
)
SELECT (SELECT count(*) FROM upd, LATERAL (SELECT pg_notify('{done}', upd.id::text)) n
        WHERE upd.status <> 'running') AS announced,
       (SELECT count(*) FROM upd) AS cancelled,
       (SELECT count(*) FROM steps) AS steps,
       (SELECT count(*) FROM upd, LATERAL (SELECT pg_notify('{cancel}', upd.id::text)) n
        WHERE upd.status = 'running') AS told
"""

RESOLVE_PARENT_STEP = """
UPDATE {s}.workflow_steps
SET status = $3, result = $4::json, error = $5::json, resolved_at = now()
WHERE workflow_id = $1::uuid AND seq = $2 AND status = 'scheduled'
RETURNING seq
"""

# ---- worker --------------------------------------------------------------------------------

# The worker's one statement per round: record the outcomes of many jobs/activities and claim
# new work. An outcome is applied only if its claim still holds (same lease, still running):
# a worker that lost its claim records nothing. The claim walks executions_claim in order and
# stops after LIMIT rows, whatever the backlog. A workflow runnable again is kept for the worker
# holding it in memory for a moment (sticky), so it resumes there instead of being replayed.
# The claim half of PUMP: candidates in index order, then the claim. It skips workflows the
# same statement wakes (``steps``) so no row is updated twice by one statement.
_CLAIM_CTES = """
cand AS (
    SELECT c.id, c.priority, c.run_at
    FROM unnest($7::text[]) AS q(queue)
    CROSS JOIN LATERAL (
        SELECT x.id, x.priority, x.run_at
        FROM {s}.executions x
        WHERE x.status = 'pending' AND x.queue = q.queue AND x.run_at <= now()
          AND (x.sticky_worker_id IS NULL OR x.sticky_worker_id = $9::uuid
               OR x.run_at <= now() - interval '200 milliseconds'
               OR NOT EXISTS (SELECT 1 FROM {s}.worker_heartbeats h
                              WHERE h.worker_id = x.sticky_worker_id))
          AND NOT (x.kind = 'workflow' AND x.version > COALESCE(
                (SELECT m.max FROM unnest($10::text[], $11::int[]) AS m(name, max)
                 WHERE m.name = x.name), 2147483647))
          -- A row this statement also wakes must not be updated twice by it.
          AND x.id NOT IN (SELECT workflow_id FROM steps)
        ORDER BY x.priority DESC, x.run_at, x.id
        LIMIT $8
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT $8
), claimed AS (
    UPDATE {s}.executions e
    SET status = 'running', worker_id = $9::uuid, lease = e.lease + 1,
        attempts = CASE WHEN e.kind = 'workflow' THEN 1 ELSE e.attempts + 1 END,
        started_at = COALESCE(e.started_at, now())
    -- An id array, not a join: the plan (generic, so not knowing LIMIT) stays on the key.
    WHERE e.id = ANY (ARRAY(SELECT cand.id FROM cand))
    RETURNING e.id::text AS id, e.kind, e.name, e.queue, e.args::text AS args, e.attempts,
              e.max_retries, e.timeout_seconds, e.lease, e.version, e.wakeups,
              e.parent_id::text AS parent_id, e.parent_seq, e.deadline,
              -- isfinite: a row written by hand (or by an old producer) with run_at
              -- -infinity must not fail every claim of its queue.
              CASE WHEN isfinite(e.run_at)
                   THEN extract(epoch FROM now() - e.run_at)::float8 END AS pickup_latency,
              -- A workflow's resolutions not yet handed to its code: all a sticky copy needs.
              CASE WHEN e.kind = 'workflow' THEN (
                  SELECT json_agg(json_build_object(
                      'seq', u.seq, 'kind', u.kind, 'name', u.name, 'status', u.status,
                      'result', u.result, 'error', u.error) ORDER BY u.seq)
                  FROM {s}.workflow_steps u
                  WHERE u.workflow_id = e.id AND u.delivered_in IS NULL
                    AND u.status <> 'scheduled')::text
              END AS resolutions
"""

PUMP = (
    """
WITH v AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::float8[])
        AS v(id, lease, status, result, error, retry_delay)
), upd AS (
    UPDATE {s}.executions e
    SET status = v.status,
        result = v.result::json,
        releases = 0,
        error = COALESCE(v.error::jsonb, e.error),
        finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE now() END,
        run_at = CASE WHEN v.status = 'pending'
                      THEN now() + make_interval(secs => COALESCE(v.retry_delay, 0))
                      ELSE e.run_at END,
        worker_id = NULL,
        cancel_requested = CASE WHEN v.status = 'pending' THEN false ELSE e.cancel_requested END
    FROM v
    WHERE e.id = v.id AND e.lease = v.lease AND e.status = 'running'
    RETURNING e.id, e.kind, e.queue, e.status, e.parent_id, e.parent_seq, e.result, e.error,
              e.run_at
), steps AS (
    -- The step keeps the outcome's text as the worker wrote it (json, not jsonb: see 0002).
    UPDATE {s}.workflow_steps st
    SET status = upd.status, result = v.result::json,
        error = COALESCE(v.error::json, upd.error::json), resolved_at = now()
    FROM upd JOIN v ON v.id = upd.id
    WHERE upd.parent_id IS NOT NULL AND upd.status IN ('completed', 'failed', 'cancelled')
      AND st.workflow_id = upd.parent_id AND st.seq = upd.parent_seq AND st.status = 'scheduled'
    RETURNING st.workflow_id, st.seq, st.kind, st.name, st.status, st.result, st.error
), wake AS (
    -- A waiting workflow this worker holds in memory is claimed straight back ($12), to resume
    -- at once; any other becomes pending for whoever claims it.
    UPDATE {s}.executions w
    SET wakeups = w.wakeups + r.n,
        status = CASE WHEN o.status <> 'waiting' THEN o.status
                      WHEN r.direct THEN 'running' ELSE 'pending' END,
        worker_id = CASE WHEN o.status = 'waiting' AND r.direct THEN $9::uuid
                         ELSE o.worker_id END,
        lease = CASE WHEN o.status = 'waiting' AND r.direct THEN o.lease + 1 ELSE o.lease END,
        run_at = CASE WHEN o.status = 'waiting' THEN now() ELSE o.run_at END
    -- LATERAL lookups by id: a nested loop on the primary key whatever the plan estimates.
    FROM (SELECT s.workflow_id, count(*) AS n,
                 bool_and($12::bool AND x.sticky_worker_id IS NOT DISTINCT FROM $9::uuid
                          AND NOT x.cancel_requested) AS direct
          FROM steps s
          CROSS JOIN LATERAL (SELECT y.sticky_worker_id, y.cancel_requested
                              FROM {s}.executions y WHERE y.id = s.workflow_id) x
          GROUP BY s.workflow_id) r
    CROSS JOIN LATERAL (SELECT z.status, z.lease, z.worker_id, z.run_at
                        FROM {s}.executions z WHERE z.id = r.workflow_id) o
    WHERE w.id = r.workflow_id
    RETURNING w.id, w.kind, w.name, w.queue, w.args, w.attempts, w.max_retries,
              w.timeout_seconds, w.lease, w.version, w.wakeups, w.parent_id, w.parent_seq,
              w.deadline, w.status, o.status = 'waiting' AND r.direct AS direct
), direct AS (
    SELECT k.*,
           (SELECT json_agg(json_build_object(
                       'seq', u.seq, 'kind', u.kind, 'name', u.name, 'status', u.status,
                       'result', u.result, 'error', u.error) ORDER BY u.seq)
            FROM (SELECT p.seq, p.kind, p.name, p.status, p.result, p.error
                  FROM {s}.workflow_steps p
                  WHERE p.workflow_id = k.id AND p.delivered_in IS NULL
                    AND p.status <> 'scheduled'
                  UNION ALL
                  SELECT n.seq, n.kind, n.name, n.status, n.result, n.error
                  FROM steps n WHERE n.workflow_id = k.id) u)::text AS resolutions
    FROM wake k
    WHERE k.direct
), notified AS (
    SELECT pg_notify('{work}', q.queue)
    FROM (SELECT queue FROM wake WHERE status = 'pending'
          UNION
          SELECT queue FROM upd WHERE status = 'pending' AND run_at <= now()) q
), """
    + _CLAIM_CTES
    + """), taken AS (
    SELECT * FROM claimed
    UNION ALL
    SELECT d.id::text, d.kind, d.name, d.queue, d.args::text, d.attempts, d.max_retries,
           d.timeout_seconds, d.lease, d.version, d.wakeups, d.parent_id::text, d.parent_seq,
           d.deadline, 0::float8, d.resolutions
    FROM direct d
)
SELECT (SELECT array_agg(id::text) FROM upd) AS recorded,
       (SELECT count(*) FROM notified) AS notified,
       taken.*
FROM (SELECT 1) AS one LEFT JOIN taken ON true
"""
)

# A round with no outcome to record: the claim alone (PUMP's $7..$12 become $1..$5).
CLAIM = re.sub(
    r"\$(7|8|9|10|11)\b",
    lambda m: f"${int(m[1]) - 6}",
    "WITH steps AS (SELECT NULL::uuid AS workflow_id WHERE false), "
    + _CLAIM_CTES
    + """)
SELECT NULL::text[] AS recorded, 0::bigint AS notified, claimed.*
FROM (SELECT 1) AS one LEFT JOIN claimed ON true
""",
)

LOAD_HISTORY = """
SELECT seq, kind, name, status, result::text AS result, error::text AS error, delivered_in
FROM {s}.workflow_steps
WHERE workflow_id = $1::uuid
ORDER BY seq
"""


APPLY_ACTIVATION = """
SELECT {s}.apply_activation($1::uuid, $2, $3::uuid, $4, $5, $6::int[],
    $7::int[], $8::text[], $9::text[], $10::text[], $11::uuid[], $12::float8[], $13::text[],
    $14::int[],
    $15::uuid[], $16::text[], $17::text[], $18::text[], $19::int[], $20::text[], $21::int[],
    $22::float8[], $23::int[], $24::float8[], $25::int[], $26::bool[],
    $27::text[], $28, $29, $30)
"""

# A batch of activity outcomes with the activations they lead to: see the function in 0002.
ADVANCE = """
SELECT item, outcome, lease FROM {s}.advance($1::uuid,
    $2::uuid[], $3::bigint[], $4::bigint[], $5::int[], $6::text[], $7::text[], $8::text[],
    $9::uuid[], $10::bigint[], $11::int[], $12::text[], $13::text[], $14::text[],
    $15::int[], $16::int[], $17::int[], $18::text[],
    $19::int[], $20::int[], $21::text[], $22::text[], $23::text[], $24::uuid[], $25::float8[],
    $26::text[], $27::int[],
    $28::int[], $29::uuid[], $30::text[], $31::text[], $32::text[], $33::int[], $34::text[],
    $35::int[], $36::float8[], $37::int[], $38::float8[], $39::int[], $40::bool[])
"""

RUNNING_HERE = """
SELECT id::text AS id, lease FROM {s}.executions WHERE status = 'running' AND worker_id = $1::uuid
"""

# Back to pending without counting the attempt: only by the worker that holds the claim
# ($4), and only a few times in a row (releases, 0005): the third in a row counts it, so an
# execution that keeps coming back (a handoff given back, a shutdown past its grace, a lost
# reply) still uses up its retries.
RELEASE = """
WITH r AS (
    UPDATE {s}.executions
    SET status = 'pending', worker_id = NULL,
        run_at = now() + make_interval(secs => $3::float8),
        attempts = CASE WHEN kind = 'workflow' OR releases >= 2 THEN attempts
                        ELSE greatest(attempts - 1, 0) END,
        releases = releases + 1
    WHERE id = $1::uuid AND lease = $2 AND status = 'running' AND worker_id = $4::uuid
    RETURNING id, queue, run_at
)
SELECT r.id, (SELECT count(*) FROM (SELECT pg_notify('{work}', r.queue)
                                    WHERE r.run_at <= now()) n) AS notified
FROM r
"""

# The claim a notification on {start} says was handed to this worker: believed only if the
# table says so (running here, first lease, a job), so a forged notification runs nothing.
HANDED_OVER = """
SELECT e.id::text AS id, e.kind, e.name, e.queue, e.args::text AS args, e.attempts,
       e.max_retries, e.timeout_seconds, e.lease, e.version, e.wakeups,
       e.parent_id::text AS parent_id, e.parent_seq, e.deadline,
       CASE WHEN isfinite(e.run_at)
            THEN extract(epoch FROM now() - e.run_at)::float8 END AS pickup_latency,
       NULL::text AS resolutions
FROM {s}.executions e
WHERE e.id = $1::uuid AND e.worker_id = $2::uuid AND e.status = 'running' AND e.lease = 1
  AND e.kind = 'job'
"""

# Whether a cancel announced on {cancel} is real: asked for in the table, of the claim held.
CANCEL_REQUESTED = """
SELECT cancel_requested FROM {s}.executions
WHERE id = $1::uuid AND lease = $2 AND worker_id = $3::uuid AND status = 'running'
"""

# An idle worker offers itself for jobs of its queues until $4 seconds from now (see 0003).
# Never waiting: an offer an enqueue is taking right now is left to it (its commit hands the
# job over), and a consumed one is not made again in the same breath.
OFFER = """
WITH held AS (
    SELECT worker_id FROM {s}.worker_offers WHERE worker_id = $1::uuid
    FOR UPDATE SKIP LOCKED
), renewed AS (
    UPDATE {s}.worker_offers o
    SET queues = $2::text[], lock_key = $3, expires_at = now() + make_interval(secs => $4::float8)
    FROM held WHERE o.worker_id = held.worker_id
    RETURNING o.worker_id
)
INSERT INTO {s}.worker_offers (worker_id, queues, lock_key, expires_at)
SELECT $1::uuid, $2::text[], $3, now() + make_interval(secs => $4::float8)
WHERE NOT EXISTS (SELECT 1 FROM {s}.worker_offers WHERE worker_id = $1::uuid)
ON CONFLICT (worker_id) DO NOTHING
"""

# Taken by a worker's listening session and held while it lives: offers name this key.
HOLD_OFFER_LOCK = "SELECT pg_try_advisory_lock($1)"

WITHDRAW = """
DELETE FROM {s}.worker_offers
WHERE worker_id IN (SELECT worker_id FROM {s}.worker_offers WHERE worker_id = $1::uuid
                    FOR UPDATE SKIP LOCKED)
"""

# Timers and signal timeouts that came due. The workflow row is locked first, as in every
# other path that touches a workflow and its steps, so the two cannot deadlock.
FIRE_DUE_STEPS = """
WITH due AS (
    SELECT st.workflow_id, st.seq, st.kind
    FROM {s}.workflow_steps st JOIN {s}.executions w ON w.id = st.workflow_id
    WHERE st.status = 'scheduled' AND st.fire_at <= now()
    ORDER BY st.fire_at
    LIMIT 500
    FOR UPDATE OF w SKIP LOCKED
), res AS (
    UPDATE {s}.workflow_steps st
    SET status = CASE WHEN due.kind = 'timer' THEN 'completed' ELSE 'failed' END,
        error = CASE WHEN due.kind = 'signal' THEN jsonb_build_object(
                    'type', 'SignalTimeoutError',
                    'message', 'no signal ' || st.name || ' before the timeout') END,
        resolved_at = now()
    FROM due
    WHERE st.workflow_id = due.workflow_id AND st.seq = due.seq AND st.status = 'scheduled'
    RETURNING st.workflow_id
), wake AS (
    UPDATE {s}.executions w
    SET wakeups = w.wakeups + r.n,
        status = CASE WHEN w.status = 'waiting' THEN 'pending' ELSE w.status END,
        run_at = CASE WHEN w.status = 'waiting' THEN now() ELSE w.run_at END
    FROM (SELECT workflow_id, count(*) AS n FROM res GROUP BY workflow_id) r
    WHERE w.id = r.workflow_id
    RETURNING w.queue, w.status
)
SELECT (SELECT count(*) FROM wake) AS fired,
       (SELECT count(*) FROM (SELECT DISTINCT queue FROM wake WHERE status = 'pending') q,
               LATERAL (SELECT pg_notify('{work}', q.queue)) n) AS notified
"""

OVERDUE_WORKFLOWS = """
SELECT id::text AS id FROM {s}.executions
WHERE deadline <= now() AND status IN ('pending', 'running', 'waiting') AND kind = 'workflow'
ORDER BY deadline
LIMIT 100
FOR UPDATE SKIP LOCKED
"""

REGISTER_WORKER = """
INSERT INTO {s}.worker_heartbeats (worker_id, hostname, pid, queues, code_version)
VALUES ($1::uuid, $2, $3, $4::text[], $5)
ON CONFLICT (worker_id) DO UPDATE SET last_heartbeat = now()
"""

HEARTBEAT = """
UPDATE {s}.worker_heartbeats SET last_heartbeat = now() WHERE worker_id = $1::uuid
RETURNING worker_id
"""

DEREGISTER_WORKER = "DELETE FROM {s}.worker_heartbeats WHERE worker_id = $1::uuid"

# Exactly one worker recovers a dead peer: the one whose DELETE removes its row.
CLAIM_DEAD_WORKERS = """
DELETE FROM {s}.worker_heartbeats
WHERE last_heartbeat < now() - make_interval(secs => $1::float8) AND worker_id <> $2::uuid
RETURNING worker_id::text AS worker_id, hostname, pid
"""

# Running executions whose worker is gone (recovered above, or never registered).
ORPHANED_RUNNING = """
SELECT e.id::text AS id, e.kind, e.queue, e.lease, e.attempts, e.max_retries
FROM {s}.executions e
WHERE e.status = 'running'
  AND (e.worker_id = ANY($1::uuid[])
       OR NOT EXISTS (SELECT 1 FROM {s}.worker_heartbeats h WHERE h.worker_id = e.worker_id))
ORDER BY e.id
FOR UPDATE SKIP LOCKED
"""

REQUEUE_WORKFLOWS = """
WITH r AS (
    UPDATE {s}.executions SET status = 'pending', worker_id = NULL, run_at = now()
    WHERE id = ANY($1::uuid[]) AND status = 'running'
    RETURNING queue
)
SELECT count(*) AS notified FROM (SELECT DISTINCT queue FROM r) q,
       LATERAL (SELECT pg_notify('{work}', q.queue)) n
"""

WORKERS_ALIVE = """
SELECT count(*) AS n FROM {s}.worker_heartbeats
WHERE last_heartbeat >= now() - make_interval(secs => $1::float8)
"""

# Sampled every heartbeat by every worker, so bounded: each count walks a partial index
# (executions_claim; executions_deadline for waiting workflows) and stops at $2.
QUEUE_DEPTHS = """
SELECT q.queue,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions p
                              WHERE p.status = 'pending' AND p.queue = q.queue
                              ORDER BY p.priority DESC, p.run_at LIMIT $2) a)
           AS pending,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions w
                              WHERE w.deadline IS NOT NULL AND w.status = 'waiting'
                                AND w.queue = q.queue
                              ORDER BY w.deadline LIMIT $2) b)
           AS waiting
FROM unnest($1::text[]) AS q(queue)
"""

ANY_RUNNABLE = """
SELECT EXISTS (
    SELECT 1 FROM unnest($1::text[]) AS q(queue)
    CROSS JOIN LATERAL (SELECT 1 FROM {s}.executions x
                        WHERE x.status = 'pending' AND x.queue = q.queue AND x.run_at <= now()
                        ORDER BY x.priority DESC, x.run_at LIMIT 1) c
) AS found
"""

SCHEMA_VERSION = """
SELECT (SELECT max(version) FROM {s}.schema_migrations) AS version
"""

SCHEMA_EXISTS = """
SELECT to_regclass($1) IS NOT NULL AS present
"""


@dataclass(frozen=True)
class Queries:
    """The statements rendered for one schema."""

    schema: str
    work_channel: str
    cancel_channel: str
    done_channel: str
    start_channel: str

    @classmethod
    def for_schema(cls, schema: str) -> Queries:
        validate_schema_name(schema)
        return cls(
            schema, f"{schema}_work", f"{schema}_cancel", f"{schema}_done", f"{schema}_start"
        )

    def sql(self, template: str) -> str:
        return template.format(
            s=quote_ident(self.schema),
            work=self.work_channel,
            cancel=self.cancel_channel,
            done=self.done_channel,
            start=self.start_channel,
        )


_DOLLAR = re.compile(r"\$(\d+)")


def to_psycopg(sql: str) -> str:
    """``$n`` placeholders as psycopg's ``%(pn)s`` (a literal ``%`` doubled)."""
    return _DOLLAR.sub(lambda m: f"%(p{m[1]})s", sql.replace("%", "%%"))
