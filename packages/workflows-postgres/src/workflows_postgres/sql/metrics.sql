-- Statements of the worker's metrics (workflows_worker/metrics.py), read by every worker for
-- its own queues every heartbeat interval, next to queue_depths (worker.sql).

-- name: queue_oldest_pending_age
-- Seconds since the oldest runnable pending execution of each queue became due; 0 when none
-- is. The claim index (executions_claim: queue, priority DESC, run_at, id) orders a queue by
-- priority first, so min(run_at) would walk the whole backlog; instead a skip scan: one index
-- probe per distinct priority pending in the queue (the first entry of a priority holds its
-- earliest run_at), at most $2 priorities, the highest ones (past that many, the age is that
-- of the $2 highest priorities'). Held executions wait for a concurrency key, not for a worker:
-- they are not runnable. A row due at -infinity (written by hand) has waited forever: +Inf,
-- rather than an error that would stop every gauge of the sample.
SELECT q.queue,
       CASE WHEN o.oldest IS NULL THEN 0
            WHEN isfinite(o.oldest) THEN EXTRACT(EPOCH FROM now() - o.oldest)::float8
            ELSE 'Infinity'::float8 END AS age
FROM unnest($1::text[]) AS q(queue)
CROSS JOIN LATERAL (
    WITH RECURSIVE levels (priority, run_at, n) AS (
        (SELECT e.priority, e.run_at, 1
         FROM {s}.executions e
         WHERE e.status = 'pending' AND NOT e.held AND e.queue = q.queue
         ORDER BY e.priority DESC, e.run_at
         LIMIT 1)
        UNION ALL
        SELECT nxt.priority, nxt.run_at, l.n + 1
        FROM levels l
        CROSS JOIN LATERAL (
            SELECT e.priority, e.run_at
            FROM {s}.executions e
            WHERE e.status = 'pending' AND NOT e.held AND e.queue = q.queue
              AND e.priority < l.priority
            ORDER BY e.priority DESC, e.run_at
            LIMIT 1
        ) nxt
        WHERE l.n < $2
    )
    SELECT min(l.run_at) FILTER (WHERE l.run_at <= now()) AS oldest FROM levels l
) o

-- name: queue_depth_estimate_pending
-- The planner's row estimate (from the statistics ANALYZE keeps) for a depth past the exact
-- limit of queue_depths: planning reads no rows, however deep the queue.
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {s}.executions p
WHERE p.status = 'pending' AND NOT p.held AND p.queue = $1::text

-- name: queue_depth_estimate_waiting
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {s}.executions w
WHERE w.deadline IS NOT NULL AND w.status = 'waiting' AND w.queue = $1::text

-- name: queue_depth_estimate_held
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {s}.executions h
WHERE h.held AND h.status = 'pending' AND h.queue = $1::text

-- name: queue_depth_estimate_throttled
-- An upper bound: every runnable pending execution of the queue, as when it is paused (what
-- holds back a deep backlog as a whole).
EXPLAIN (FORMAT JSON)
SELECT 1 FROM {s}.executions t
WHERE t.status = 'pending' AND NOT t.held AND t.queue = $1::text AND t.run_at <= now()
