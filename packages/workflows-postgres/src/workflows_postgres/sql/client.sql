-- The client's statements: enqueueing, signals, status, cancelling.
--
-- Each statement is a block that starts with a `-- name: <name>` line (loaded once by
-- workflows_postgres.queries). `{s}` stands for the quoted schema, `{work}`, `{cancel}`,
-- `{done}` and `{start}` for the notification channels; parameters are `$n` (psycopg's
-- callers get them rewritten). jsonb, uuid and timestamps travel as text in both directions
-- so both drivers see the same values.

-- One job or workflow (see the function in 0006: a job to run now may go straight to an idle
-- worker). No row when the idempotency key is taken: the caller reads the winner's id.
-- name: enqueue
SELECT id::text AS id FROM {s}.enqueue(
    $1::text, $2::text, $3::text, $4::int, $5::text, $6::int, $7::float8, $8::timestamptz,
    $9::float8, $10::text, $11::int, $12::float8, $13::bool, $14::text, $15::int, $16::text,
    $17::float8, $18::text)

-- The common case of one run, to start now, with no key or limit (ops.plain_args picks it):
-- the insert and its notification as one plain statement. enqueue() in plpgsql cost about
-- 33 us more per call (a twelfth of the call, commit included). While a worker offers itself
-- for the queue, it inserts nothing and returns no row: the caller then runs enqueue(), for
-- its handoff (a second round trip, only while a worker sits idle). Handing over in this
-- statement too (a branch calling enqueue() when the offer is open) cost every call, offer or
-- none, 20 to 50 us more (p50 of interleaved calls, three sittings): the executor sets the
-- branch up on each run. Its rows are the same as enqueue()'s for the same parameters
-- (test_enqueue_plain).
-- name: enqueue_now
INSERT INTO {s}.executions
    (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at, version,
     deadline, trace_context)
SELECT {s}.new_id(), p.kind, p.name, p.queue, p.priority, p.args::json, p.retries, p.timeout,
       now(), p.version, now() + make_interval(secs => p.wf_timeout), p.trace_context::jsonb
FROM (SELECT $1::text AS kind, $2::text AS name, $3::text AS queue, $4::int AS priority,
             $5::text AS args, $6::int AS retries, $7::float8 AS timeout, $8::int AS version,
             $9::float8 AS wf_timeout, $10::text AS trace_context) p
WHERE NOT EXISTS (
    SELECT 1 FROM {s}.worker_offers f
    WHERE f.queues @> ARRAY[p.queue] AND f.expires_at > now()
)
RETURNING id::text AS id, pg_notify('{work}', queue) AS notified

-- name: find_by_idempotency_key
SELECT id::text AS id FROM {s}.executions WHERE idempotency_key = $1

-- One queue_many(): every run has the same options, so they go as scalars and only the
-- arguments as an array (unnesting eleven arrays cost the server as much as the inserts);
-- the flow-control keys go as arrays (one per run), since they may be computed from each
-- call's arguments. The trace context is the batch's one span's.
-- name: enqueue_many
WITH ins AS (
    INSERT INTO {s}.executions
        (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
         version, deadline, concurrency_key, concurrency_limit, rate_key, trace_context)
    SELECT {s}.new_id(), $1, $2, $3, $4, a.args::json, $6, $7,
           COALESCE($8::timestamptz, now() + make_interval(secs => COALESCE($9::float8, 0))),
           $10, now() + make_interval(secs => $11::float8),
           ($12::text[])[a.ord], $13::int, ($14::text[])[a.ord], $15::jsonb
    FROM unnest($5::text[]) WITH ORDINALITY AS a(args, ord)
    ORDER BY a.ord
    RETURNING id, run_at, held
), notified AS (
    SELECT pg_notify('{work}', $3)
    WHERE EXISTS (SELECT 1 FROM ins WHERE run_at <= now() AND NOT held)
)
SELECT id::text AS id, (SELECT count(*) FROM notified) AS notified FROM ins

-- queue_many() with concurrency keys (parameters as enqueue_many): the rows take their keys'
-- slots in key order, so two batches on the same keys never wait for each other crosswise
-- (a deadlock). Each key's runs start in call order: run_at a microsecond apart, since ids
-- drawn in the same millisecond are in no order.
-- name: enqueue_many_keyed
WITH a AS MATERIALIZED (
    SELECT {s}.new_id() AS id, a.args, a.ord, ($12::text[])[a.ord] AS ckey,
           ($14::text[])[a.ord] AS rkey
    FROM unnest($5::text[]) WITH ORDINALITY AS a(args, ord)
    ORDER BY a.ord
), ins AS (
    INSERT INTO {s}.executions
        (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
         version, deadline, concurrency_key, concurrency_limit, rate_key, trace_context)
    SELECT a.id, $1, $2, $3, $4, a.args::json, $6, $7,
           COALESCE($8::timestamptz, now() + make_interval(secs => COALESCE($9::float8, 0)))
               + make_interval(secs => (a.ord - 1) / 1e6),
           $10, now() + make_interval(secs => $11::float8), a.ckey, $13::int, a.rkey,
           $15::jsonb
    FROM a
    ORDER BY a.ckey NULLS FIRST, a.ord
    RETURNING id, run_at, held
), notified AS (
    SELECT pg_notify('{work}', $3)
    WHERE EXISTS (SELECT 1 FROM ins WHERE run_at <= now() AND NOT held)
)
SELECT a.id::text AS id, (SELECT count(*) FROM notified) AS notified
FROM a JOIN ins USING (id)
ORDER BY a.ord

-- A workflow's timeout is stored as its deadline, now() + timeout at the insert that also sets
-- created_at to now(): the difference is the timeout exactly, to the microsecond.
-- name: status
SELECT
    e.id::text AS id, e.kind, e.name, e.queue, e.status, e.priority, e.attempts, e.max_retries,
    CASE WHEN e.kind = 'workflow' THEN extract(epoch FROM e.deadline - COALESCE(e.retried_at, e.created_at))::float8
         ELSE e.timeout_seconds END AS timeout_seconds,
    e.args::text AS args, e.result::text AS result, e.error::text AS error,
    e.version, e.parent_id::text AS parent_id, e.idempotency_key, e.run_at, e.created_at,
    e.started_at, e.finished_at, e.cancel_requested, e.worker_id::text AS worker_id,
    e.schedule_name, e.schedule_tick, e.concurrency_key, e.rate_key,
    CASE WHEN e.status = 'pending' THEN {s}.waiting_for(e) END AS waiting_for
FROM {s}.executions e WHERE e.id = $1::uuid

-- name: steps_of
SELECT seq, kind, name, status, execution_id::text AS execution_id, result::text AS result,
       error::text AS error, fire_at
FROM {s}.workflow_steps WHERE workflow_id = $1::uuid ORDER BY seq

-- name: lock_execution
SELECT id::text AS id, kind, status, queue, parent_id::text AS parent_id, parent_seq
FROM {s}.executions WHERE id = $1::uuid FOR UPDATE

-- name: insert_signal
INSERT INTO {s}.workflow_signals (workflow_id, name, payload) VALUES ($1::uuid, $2, $3::json)

-- Hand the oldest unconsumed signal of the name to the first open wait for it.
-- name: deliver_signal
SELECT {s}.consume_signals($1::uuid, ARRAY[$2::text]) AS delivered

-- A step of the workflow got resolved: count it, and make a waiting workflow runnable.
-- name: wake_workflow
SELECT {s}.wake(ARRAY[$1::uuid]) AS notified

-- Mark an execution and every descendant cancelled; running ones are told to stop.
-- name: cancel_tree
WITH RECURSIVE tree AS (
    SELECT id FROM {s}.executions WHERE id = $1::uuid
    UNION ALL
    SELECT c.id FROM {s}.executions c JOIN tree t ON c.parent_id = t.id
), upd AS (
    UPDATE {s}.executions e
    SET cancel_requested = true,
        -- A running job or activity stays as it is until its worker stops it.
        status = CASE WHEN e.status = 'running' AND e.kind <> 'workflow' THEN e.status
                      WHEN e.id = $1::uuid THEN $2
                      ELSE 'cancelled' END,
        error = CASE WHEN e.id = $1::uuid THEN $3::jsonb
                     ELSE '{"type": "ExecutionCancelledError", "message": "parent ended"}'::jsonb
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

-- An execution ended by a cancel or a timeout: its parent's step, and the parent woken.
-- name: resolve_parent_step
SELECT {s}.resolve_step($1::uuid, $2, $3, $4, $5) AS resolved

-- What a finished workflow started and never waited for.
-- name: open_children
SELECT id::text AS id FROM {s}.executions
WHERE parent_id = $1::uuid AND status IN ('pending', 'running', 'waiting')

-- name: close_open_steps
UPDATE {s}.workflow_steps SET status = 'cancelled', resolved_at = now()
WHERE workflow_id = $1::uuid AND status = 'scheduled'

-- name: schema_version
SELECT (SELECT max(version) FROM {s}.schema_migrations) AS version

-- name: schema_exists
SELECT to_regclass($1) IS NOT NULL AS present

-- sync.py waits for an end on the done channel (a validated name: LISTEN takes no parameter).
-- name: listen
LISTEN "{done}"

-- name: unlisten
UNLISTEN "{done}"
