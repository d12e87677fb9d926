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
-- Each queue's figures ($1: one queue, NULL: every known one; $2: where counts stop): see
-- the function in migration 0011.
SELECT * FROM {s}.fleet_queue_stats($1::text, $2::int)

-- name: fleet_list
-- Executions newest first, filtered, one page ($9 rows) after the cursor ($7 created_at, $8
-- id: the last row of the page before); created_at from $5 or $10 seconds ago (inclusive) to
-- $6 or $11 seconds ago (exclusive). Ties on created_at (a batch is created in one
-- transaction) are ordered by id.
-- Two walks of executions_created (created_at DESC), each from the cursor: the first, in the
-- index's own order, finds the created_at of the page's last row; the second reads the rows
-- from the cursor down to it and sorts those few by id. (One walk ordered by (created_at, id)
-- is what a custom plan does, but a generic plan, which a prepared statement gets after five
-- runs, sorted every row from the cursor to the end of the table: 0.6 s on 300,000 rows.)
-- Bounds are COALESCEd rather than `$n IS NULL OR`, so that a generic plan has them as
-- conditions of the index scan too. $12, the floor fleet_scan_floor found, stops a filtered
-- walk after so many executions whatever matches (a filter matching nothing would otherwise
-- read the whole table).
WITH bound AS MATERIALIZED (
    SELECT b.created_at
    FROM {s}.executions b
    WHERE b.created_at >= COALESCE($5::text::timestamptz,
                                   now() - make_interval(secs => $10::float8), '-infinity')
      AND b.created_at >= COALESCE($12::text::timestamptz, '-infinity')
      AND b.created_at < COALESCE($6::text::timestamptz,
                                  now() - make_interval(secs => $11::float8), 'infinity')
      AND b.created_at <= COALESCE($7::text::timestamptz, 'infinity')
      AND ($7::text IS NULL OR b.created_at < $7::text::timestamptz OR b.id > $8::text::uuid)
      AND ($1::text IS NULL OR b.queue = $1) AND ($2::text IS NULL OR b.status = $2)
      AND ($3::text IS NULL OR b.kind = $3) AND ($4::text IS NULL OR b.name = $4)
    ORDER BY b.created_at DESC
    OFFSET $9::int - 1 LIMIT 1
)
SELECT
    e.id::text AS id, e.kind, e.name, e.queue, e.status, e.priority, e.attempts, e.max_retries,
    CASE WHEN e.kind = 'workflow' THEN extract(epoch FROM e.deadline - COALESCE(e.retried_at, e.created_at))::float8
         ELSE e.timeout_seconds END AS timeout_seconds,
    e.args::text AS args, e.result::text AS result, e.error::text AS error,
    e.version, e.parent_id::text AS parent_id, e.idempotency_key, e.run_at, e.created_at,
    e.started_at, e.finished_at, e.cancel_requested, e.worker_id::text AS worker_id,
    e.schedule_name, e.schedule_tick, e.concurrency_key, e.rate_key,
    CASE WHEN e.status = 'pending' THEN {s}.waiting_for(e) END AS waiting_for
FROM {s}.executions e
WHERE e.created_at >= COALESCE((SELECT created_at FROM bound), $5::text::timestamptz,
                               now() - make_interval(secs => $10::float8), '-infinity')
  AND e.created_at >= COALESCE($5::text::timestamptz,
                               now() - make_interval(secs => $10::float8), '-infinity')
  AND e.created_at >= COALESCE($12::text::timestamptz, '-infinity')
  AND e.created_at < COALESCE($6::text::timestamptz,
                              now() - make_interval(secs => $11::float8), 'infinity')
  AND e.created_at <= COALESCE($7::text::timestamptz, 'infinity')
  AND ($7::text IS NULL OR e.created_at < $7::text::timestamptz OR e.id > $8::text::uuid)
  AND ($1::text IS NULL OR e.queue = $1) AND ($2::text IS NULL OR e.status = $2)
  AND ($3::text IS NULL OR e.kind = $3) AND ($4::text IS NULL OR e.name = $4)
ORDER BY e.created_at DESC, e.id
LIMIT $9

-- name: fleet_scan_floor
-- How far down a filtered page may walk: the created_at of the execution $7 places below the
-- cursor ($3 created_at, $4 id) or the upper bound ($2 or $6 seconds ago), within the lower
-- bound ($1 or $5 seconds ago); NULL when fewer lie there (the walk may go to the end). One walk
-- of executions_created, unfiltered: it reads $7 entries, whatever the filters match.
SELECT b.created_at
FROM {s}.executions b
WHERE b.created_at >= COALESCE($1::text::timestamptz,
                               now() - make_interval(secs => $5::float8), '-infinity')
  AND b.created_at < COALESCE($2::text::timestamptz,
                              now() - make_interval(secs => $6::float8), 'infinity')
  AND b.created_at <= COALESCE($3::text::timestamptz, 'infinity')
  AND ($3::text IS NULL OR b.created_at < $3::text::timestamptz OR b.id > $4::text::uuid)
ORDER BY b.created_at DESC
OFFSET $7::int LIMIT 1

-- name: fleet_resolve
-- The executions whose id lies in [$1, $2] (an id prefix padded with 0s and fs): a range of
-- the primary key. Two are enough to tell one from several.
SELECT e.id::text AS id FROM {s}.executions e
WHERE e.id >= $1::text::uuid AND e.id <= $2::text::uuid
-- e.id, the column: a bare `id` would be the text alias, sorted without the index.
ORDER BY e.id
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

-- name: fleet_signals
-- The signals a workflow received ($1), oldest first, with the step that took each (NULL:
-- not taken yet). Walks workflow_signals_workflow.
SELECT s.id, s.name, s.payload::text AS payload, s.consumed_seq, s.created_at AS received_at
FROM {s}.workflow_signals s
WHERE s.workflow_id = $1::text::uuid
ORDER BY s.id

-- name: fleet_by_key
-- The execution that holds idempotency key $1 (unique among executions that hold one).
SELECT e.id::text AS id FROM {s}.executions e
WHERE e.idempotency_key = $1::text

-- name: fleet_throughput
-- Ends per queue and minute over the last $1 minutes, completed and failed: two walks of
-- executions_finished (status, finished_at), one per status, over that window only.
SELECT e.queue, e.status,
       floor(extract(epoch FROM now() - e.finished_at) / 60)::int AS minutes_ago,
       count(*) AS n
FROM {s}.executions e
WHERE e.status IN ('completed', 'failed') AND e.finished_at IS NOT NULL
  AND e.finished_at > now() - make_interval(mins => $1::int)
GROUP BY 1, 2, 3

-- name: fleet_running
-- What runs now, on which worker (at most $1 rows, longest-running first): the running rows
-- are few (bounded by the fleet's slots) and executions_running_by_worker holds only them.
SELECT e.id::text AS id, e.kind, e.name, e.queue, e.worker_id::text AS worker_id,
       e.started_at, e.attempts
FROM {s}.executions e
WHERE e.status = 'running'
ORDER BY e.started_at NULLS LAST, e.id
LIMIT $1::int
