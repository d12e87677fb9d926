-- Seeing the fleet (workflows queues): each queue's figures, read by one function.
--
-- A function, for its `SET jit = off`: the planner cannot know how few queues there are (a
-- recursive CTE and a union of five sources: it guesses thousands), and thousands times each
-- queue's capped counts put the plan far above jit_above_cost, even on a small table. The
-- compiling then cost more than the run: 3.8 s against 7 ms, on 300,000 rows under load. A
-- statement cannot turn JIT off for itself, and a setting of the session would outlive it.
--
-- Each queue's figures (p_queue: one queue, NULL: every queue known; p_cap: where counts stop).
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
CREATE FUNCTION {s}.fleet_queue_stats(p_queue text, p_cap integer)
RETURNS TABLE (name text, concurrency integer, rate_starts integer, rate_period float8,
               paused boolean, running bigint, pending bigint, waiting bigint, held bigint,
               throttled bigint, oldest_pending_seconds float8, completed_5m bigint,
               failed_5m bigint)
LANGUAGE sql STABLE
SET jit = off
AS $$
    WITH RECURSIVE pending_queues AS (
        (SELECT x.queue FROM {s}.executions x
         WHERE x.status = 'pending' AND NOT x.held AND p_queue IS NULL
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
          AND (p_queue IS NULL OR f.queue = p_queue)
        GROUP BY f.queue
    ), names AS (
        SELECT qs.name FROM {s}.queues qs WHERE p_queue IS NULL
        UNION
        SELECT unnest(h.queues) FROM {s}.worker_heartbeats h WHERE p_queue IS NULL
        UNION
        SELECT queue FROM pending_queues WHERE queue IS NOT NULL
        UNION
        SELECT r.queue FROM {s}.executions r WHERE r.status = 'running' AND p_queue IS NULL
        UNION
        SELECT queue FROM finished
        UNION
        SELECT p_queue WHERE p_queue IS NOT NULL
    )
    SELECT n.name, q.concurrency, q.rate_starts, q.rate_period, COALESCE(q.paused, false) AS paused,
           (SELECT count(*) FROM {s}.executions r WHERE r.queue = n.name AND r.status = 'running')
               AS running,
           (SELECT count(*) FROM (SELECT 1 FROM {s}.executions p
                                  WHERE p.queue = n.name AND p.status = 'pending' AND NOT p.held
                                  ORDER BY p.priority DESC, p.run_at LIMIT p_cap) a) AS pending,
           (SELECT count(*) FROM (SELECT 1 FROM {s}.executions w
                                  WHERE w.deadline IS NOT NULL AND w.status = 'waiting'
                                    AND w.queue = n.name
                                  ORDER BY w.deadline LIMIT p_cap) b) AS waiting,
           (SELECT count(*) FROM (SELECT 1 FROM {s}.executions h
                                  WHERE h.held AND h.status = 'pending' AND h.queue = n.name
                                  LIMIT p_cap) c) AS held,
           CASE WHEN fl.queue_stopped OR cardinality(sp.keys) > 0 THEN
               (SELECT count(*) FROM (SELECT 1 FROM {s}.executions t
                                      WHERE t.status = 'pending' AND NOT t.held AND t.queue = n.name
                                        AND t.run_at <= now()
                                        AND (fl.queue_stopped OR t.rate_key = ANY (sp.keys))
                                      ORDER BY t.priority DESC, t.run_at LIMIT p_cap) d)
           ELSE 0 END AS throttled,
           extract(epoch FROM now() - o.oldest)::float8 AS oldest_pending_seconds,
           COALESCE(fin.completed, 0) AS completed_5m, COALESCE(fin.failed, 0) AS failed_5m
    FROM names n
    -- The rate keys without room, once (in the filter below, the call would be made per row).
    CROSS JOIN (SELECT {s}.spent_rate_keys(now()) AS keys OFFSET 0) sp
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
                   AS queue_stopped
        OFFSET 0
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
$$;
