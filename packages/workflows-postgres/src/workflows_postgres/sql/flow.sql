-- Flow control's settings: queues' limits and pauses, named rates (functions in 0007). Run
-- through the stores' control(); parameters as in client.sql.

-- name: set_queue
SELECT name, concurrency, rate_starts, rate_period, paused, updated_at
FROM {s}.set_queue($1::text, $2::int, $3::int, $4::float8, $5::bool, $6::bool, $7::bool,
                   $8::bool)

-- A queue's settings and load ($1; NULL: every queue with settings or a live worker). Counts
-- stop at $2 so a deep backlog costs a bounded walk of the claim index.
-- name: queue_info
WITH names AS (
    SELECT name FROM {s}.queues WHERE $1::text IS NULL OR name = $1
    UNION
    SELECT DISTINCT unnest(h.queues) FROM {s}.worker_heartbeats h WHERE $1::text IS NULL
    UNION
    SELECT $1 WHERE $1::text IS NOT NULL
)
SELECT n.name, q.concurrency, q.rate_starts, q.rate_period, COALESCE(q.paused, false) AS paused,
       (SELECT count(*) FROM {s}.executions r WHERE r.queue = n.name AND r.status = 'running')
           AS running,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions p
                              WHERE p.queue = n.name AND p.status = 'pending' AND NOT p.held
                              ORDER BY p.priority DESC, p.run_at LIMIT $2) a) AS pending,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions p
                              WHERE p.status = 'pending' AND p.held AND p.queue = n.name
                              LIMIT $2) b) AS held
FROM names n LEFT JOIN {s}.queues q ON q.name = n.name
ORDER BY n.name

-- name: set_rate_limit
SELECT {s}.set_rate_limit($1::text, $2::int, $3::float8) AS existed

-- name: rate_limit_info
SELECT r.key, r.starts, r.period, r.updated_at,
       (SELECT count(*) FROM {s}.rate_starts s
        WHERE s.limiter = 'k:' || r.key AND s.at > now() - make_interval(secs => r.period))
           AS recent
FROM {s}.rate_limits r
WHERE $1::text IS NULL OR r.key = $1
ORDER BY r.key

-- The limited queues, the rated ones and whether any rate key has a rate: what a worker needs
-- to keep activities under a limit from running ahead of their admission (eager) and to know
-- when a spent rate will have room again.
-- name: flow_view
SELECT COALESCE(array_agg(q.name) FILTER (
           WHERE q.paused OR q.concurrency IS NOT NULL OR q.rate_starts IS NOT NULL), '{}')
           AS limited,
       COALESCE(array_agg(q.name) FILTER (WHERE q.rate_starts IS NOT NULL), '{}') AS rated,
       COALESCE(array_agg(q.name) FILTER (WHERE q.concurrency IS NOT NULL), '{}') AS capped,
       EXISTS (SELECT 1 FROM {s}.rate_limits) AS rates
FROM {s}.queues q

-- When a worker whose claim came back short should look again, in seconds, for its queues $1
-- that have runnable work: now (0) when the rate of one of them has room, else when the first
-- spent rate (of a queue, or a rate key) has room again, as its oldest start leaves the window.
-- NULL: no runnable work, or no rate involved.
-- name: rate_room_at
SELECT CASE WHEN EXISTS (
           SELECT 1 FROM unnest($1::text[]) AS q(queue)
           WHERE EXISTS (SELECT 1 FROM {s}.executions x
                         WHERE x.status = 'pending' AND NOT x.held AND x.queue = q.queue
                           AND x.run_at <= now()))
       THEN greatest(min(w.seconds), 0) END AS seconds
FROM (
    SELECT CASE WHEN l.used < q.rate_starts THEN 0
                ELSE extract(epoch FROM l.first + make_interval(secs => q.rate_period)
                                        - clock_timestamp()) END::float8 AS seconds
    FROM {s}.queues q
    CROSS JOIN LATERAL (
        SELECT count(*) AS used, min(s.at) AS first FROM {s}.rate_starts s
        WHERE s.limiter = 'q:' || q.name
          AND s.at > clock_timestamp() - make_interval(secs => q.rate_period)) l
    WHERE q.name = ANY ($1::text[]) AND q.rate_starts IS NOT NULL
    UNION ALL
    SELECT extract(epoch FROM min(s.at) + make_interval(secs => r.period)
                              - clock_timestamp())::float8
    FROM {s}.rate_limits r JOIN {s}.rate_starts s ON s.limiter = 'k:' || r.key
    WHERE r.key = ANY ({s}.spent_rate_keys(clock_timestamp()))
      AND s.at > clock_timestamp() - make_interval(secs => r.period)
    GROUP BY r.key, r.period
) w

-- What worker $1 reports it can hold running at most ($2; NULL: no bound it keeps to).
-- name: report_running_bound
UPDATE {s}.worker_heartbeats SET running_bound = $2::int WHERE worker_id = $1::uuid
