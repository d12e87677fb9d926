-- Seeing the fleet: workers, queues' figures, executions listed and resolved, a workflow's
-- history. Read-only, run through the stores' control(); parameters as in client.sql
-- (timestamps and ids travel as text, cast here, so both drivers pass the same values).

-- name: fleet_workers
-- Every registered worker ($1: the heartbeat timeout, seconds), with what it runs now: each
-- count walks executions_running_by_worker for its own worker id.
SELECT h.worker_id::text AS worker_id, h.hostname, h.pid, h.queues, h.code_version,
       h.started_at, h.last_heartbeat, h.running_bound,
       extract(epoch FROM now() - h.last_heartbeat)::float8 AS beat_age,
       h.last_heartbeat >= now() - make_interval(secs => $1::float8) AS alive,
       (SELECT count(*) FROM {s}.executions e
        WHERE e.worker_id = h.worker_id AND e.status = 'running') AS running
FROM {s}.worker_heartbeats h
ORDER BY h.hostname, h.started_at, h.worker_id

-- name: fleet_queue_stats
-- Each queue's figures ($1: one queue, NULL: every queue known; $2: where counts stop).
-- Queues known: with settings, served by a registered worker, with pending or running work, or
-- with an end in the last five minutes (a queue whose only rows are waiting or held is not
-- found by name: that would walk every waiting row, and a live worker serves it anyway).
-- Every figure is read through an index and bounded:
--   pending, held, waiting: capped walks of executions_claim, executions_held and
--     executions_deadline (every workflow has a deadline) as in queue_depths;
--   running: executions_running_by_worker (every running row: few, whatever the backlog);
--   the oldest runnable pending: a loose scan of executions_claim, one descent per distinct
--     priority to its earliest run_at (the index is ordered by priority first, so a plain
--     min(run_at) would read every runnable row);
--   completed/failed in the last five minutes: executions_finished (status, finished_at),
--     made by migration 0009 (without it, a scan of the table);
--   the queues with pending work: a loose scan of executions_claim's leading column.
WITH RECURSIVE pending_queues AS (
    (SELECT x.queue FROM {s}.executions x
     WHERE x.status = 'pending' AND NOT x.held AND $1::text IS NULL
     ORDER BY x.queue LIMIT 1)
    UNION ALL
    SELECT (SELECT x.queue FROM {s}.executions x
            WHERE x.status = 'pending' AND NOT x.held AND x.queue > p.queue
            ORDER BY x.queue LIMIT 1)
    FROM pending_queues p WHERE p.queue IS NOT NULL
), finished AS (
    SELECT f.queue, count(*) FILTER (WHERE f.status = 'completed') AS completed,
           count(*) FILTER (WHERE f.status = 'failed') AS failed
    FROM {s}.executions f
    WHERE f.status IN ('completed', 'failed') AND f.finished_at IS NOT NULL
      AND f.finished_at > now() - interval '5 minutes'
      AND ($1::text IS NULL OR f.queue = $1)
    GROUP BY f.queue
), names AS (
    SELECT name FROM {s}.queues WHERE $1::text IS NULL
    UNION
    SELECT unnest(h.queues) FROM {s}.worker_heartbeats h WHERE $1::text IS NULL
    UNION
    SELECT queue FROM pending_queues WHERE queue IS NOT NULL
    UNION
    SELECT r.queue FROM {s}.executions r WHERE r.status = 'running' AND $1::text IS NULL
    UNION
    SELECT queue FROM finished
    UNION
    SELECT $1::text WHERE $1::text IS NOT NULL
)
SELECT n.name, q.concurrency, q.rate_starts, q.rate_period, COALESCE(q.paused, false) AS paused,
       (SELECT count(*) FROM {s}.executions r WHERE r.queue = n.name AND r.status = 'running')
           AS running,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions p
                              WHERE p.queue = n.name AND p.status = 'pending' AND NOT p.held
                              ORDER BY p.priority DESC, p.run_at LIMIT $2) a) AS pending,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions w
                              WHERE w.deadline IS NOT NULL AND w.status = 'waiting'
                                AND w.queue = n.name
                              ORDER BY w.deadline LIMIT $2) b) AS waiting,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions h
                              WHERE h.held AND h.status = 'pending' AND h.queue = n.name
                              LIMIT $2) c) AS held,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions t
                              WHERE t.status = 'pending' AND NOT t.held AND t.queue = n.name
                                AND t.run_at <= now()
                                AND (fl.queue_stopped OR t.rate_key = ANY (fl.spent))
                              ORDER BY t.priority DESC, t.run_at LIMIT $2) d) AS throttled,
       extract(epoch FROM now() - o.oldest)::float8 AS oldest_pending_seconds,
       COALESCE(fin.completed, 0) AS completed_5m, COALESCE(fin.failed, 0) AS failed_5m
FROM names n
LEFT JOIN {s}.queues q ON q.name = n.name
LEFT JOIN finished fin ON fin.queue = n.name
CROSS JOIN LATERAL (
    SELECT COALESCE(q.paused
                    OR q.concurrency <= (SELECT count(*) FROM {s}.executions r
                                         WHERE r.queue = n.name AND r.status = 'running')
                    OR q.rate_starts <= (SELECT count(*) FROM {s}.rate_starts s
                                         WHERE s.limiter = 'q:' || n.name
                                           AND s.at > now() - make_interval(
                                               secs => q.rate_period)), false)
               AS queue_stopped,
           {s}.spent_rate_keys(now()) AS spent
) fl
CROSS JOIN LATERAL (
    WITH RECURSIVE prio AS (
        (SELECT x.priority FROM {s}.executions x
         WHERE x.queue = n.name AND x.status = 'pending' AND NOT x.held
         ORDER BY x.priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT x.priority FROM {s}.executions x
                WHERE x.queue = n.name AND x.status = 'pending' AND NOT x.held
                  AND x.priority < p.priority
                ORDER BY x.priority DESC LIMIT 1)
        FROM prio p WHERE p.priority IS NOT NULL
    )
    SELECT min(e.run_at) AS oldest
    FROM prio p
    CROSS JOIN LATERAL (SELECT x.run_at FROM {s}.executions x
                        WHERE x.queue = n.name AND x.status = 'pending' AND NOT x.held
                          AND x.priority = p.priority
                        ORDER BY x.run_at LIMIT 1) e
    WHERE p.priority IS NOT NULL AND e.run_at <= now()
) o
WHERE n.name IS NOT NULL
ORDER BY n.name

-- name: fleet_list
-- Executions newest first, filtered, one page ($9 rows) after the cursor ($7 created_at, $8
-- id: the last row of the page before); created_at from $5 or $10 seconds ago (inclusive) to
-- $6 or $11 seconds ago (exclusive). Bounds are COALESCEd rather than `$n IS NULL OR`, so
-- that even a generic plan has them as conditions of executions_created's index scan: a page
-- deep in the table starts where the cursor points, not at the newest row. Ties on created_at
-- (a batch is created in one transaction) are ordered by id.
SELECT
    e.id::text AS id, e.kind, e.name, e.queue, e.status, e.priority, e.attempts, e.max_retries,
    CASE WHEN e.kind = 'workflow' THEN extract(epoch FROM e.deadline - e.created_at)::float8
         ELSE e.timeout_seconds END AS timeout_seconds,
    e.args::text AS args, e.result::text AS result, e.error::text AS error,
    e.version, e.parent_id::text AS parent_id, e.idempotency_key, e.run_at, e.created_at,
    e.started_at, e.finished_at, e.cancel_requested, e.worker_id::text AS worker_id,
    e.schedule_name, e.schedule_tick, e.concurrency_key, e.rate_key,
    CASE WHEN e.status = 'pending' THEN {s}.waiting_for(e) END AS waiting_for
FROM {s}.executions e
WHERE e.created_at >= COALESCE($5::text::timestamptz, now() - make_interval(secs => $10::float8),
                                '-infinity')
  AND e.created_at < COALESCE($6::text::timestamptz, now() - make_interval(secs => $11::float8),
                              'infinity')
  AND e.created_at <= COALESCE($7::text::timestamptz, 'infinity')
  AND ($7::text IS NULL OR e.created_at < $7::text::timestamptz OR e.id > $8::text::uuid)
  AND ($1::text IS NULL OR e.queue = $1) AND ($2::text IS NULL OR e.status = $2)
  AND ($3::text IS NULL OR e.kind = $3) AND ($4::text IS NULL OR e.name = $4)
ORDER BY e.created_at DESC, e.id
LIMIT $9

-- name: fleet_resolve
-- The executions whose id lies in [$1, $2] (an id prefix padded with 0s and fs): a range of
-- the primary key. Two are enough to tell one from several.
SELECT id::text AS id FROM {s}.executions
WHERE id >= $1::text::uuid AND id <= $2::text::uuid
ORDER BY id
LIMIT 2

-- name: fleet_history
-- A workflow's steps and, recursively, its child workflows' ($1), each with the execution it
-- started (activities' attempts and times are on their rows); primary keys only. Depth is
-- bounded in case a hand-written row made a cycle.
WITH RECURSIVE tree AS (
    SELECT $1::text::uuid AS id, 0 AS depth
    UNION ALL
    SELECT st.execution_id, t.depth + 1
    FROM tree t JOIN {s}.workflow_steps st ON st.workflow_id = t.id
    WHERE st.kind = 'child' AND st.execution_id IS NOT NULL AND t.depth < 64
)
SELECT st.workflow_id::text AS workflow_id, t.depth, st.seq, st.kind, st.name,
       st.status, st.execution_id::text AS execution_id, st.fire_at,
       st.result::text AS result, st.error::text AS error,
       st.created_at AS scheduled_at, st.resolved_at,
       e.status AS execution_status, e.queue, e.attempts, e.max_retries, e.started_at,
       e.finished_at
FROM tree t
JOIN {s}.workflow_steps st ON st.workflow_id = t.id
LEFT JOIN {s}.executions e ON e.id = st.execution_id
ORDER BY t.depth, st.workflow_id, st.seq
