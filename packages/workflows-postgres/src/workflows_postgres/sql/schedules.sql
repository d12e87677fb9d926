-- Cron schedules (migration 0008): the run-time API's statements (workflows.schedules) and the
-- workers' (workflows_worker.scheduler), each run by a store's control() in a transaction of
-- its own. Format and placeholders as in client.sql.

-- name: upsert_schedule
-- A schedule created (source 'api') or registered by a worker from the code (source 'code'),
-- or updated in place by the same source: no row when the name belongs to the other source,
-- which stays as it is. A change of cron or timezone counts ticks again from now (the old
-- next tick may not be a tick any more); a pause stays, so an operator's pause outlives
-- deploys and restarts.
INSERT INTO {s}.schedules AS s
    (name, source, kind, function_name, queue, priority, args, max_retries, timeout_seconds,
     version, workflow_timeout, concurrency_key, concurrency_limit, rate_key, cron, timezone,
     catchup)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::int, $7::json, $8::int,
        $9::float8, $10::int, $11::float8, $12::text, $13::int, $14::text, $15::text, $16::text,
        $17::bool)
ON CONFLICT (name) DO UPDATE
SET kind = EXCLUDED.kind, function_name = EXCLUDED.function_name, queue = EXCLUDED.queue,
    priority = EXCLUDED.priority, args = EXCLUDED.args, max_retries = EXCLUDED.max_retries,
    timeout_seconds = EXCLUDED.timeout_seconds, version = EXCLUDED.version,
    workflow_timeout = EXCLUDED.workflow_timeout, concurrency_key = EXCLUDED.concurrency_key,
    concurrency_limit = EXCLUDED.concurrency_limit, rate_key = EXCLUDED.rate_key,
    cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, catchup = EXCLUDED.catchup,
    next_tick = CASE WHEN (s.cron, s.timezone) = (EXCLUDED.cron, EXCLUDED.timezone)
                     THEN s.next_tick END,
    ticks_from = CASE WHEN (s.cron, s.timezone) = (EXCLUDED.cron, EXCLUDED.timezone)
                      THEN s.ticks_from ELSE now() END,
    -- json has no equality: the arguments compare as their text, exactly as encoded.
    updated_at = CASE WHEN (s.kind, s.function_name, s.queue, s.priority, s.args::text,
                            s.max_retries, s.timeout_seconds, s.version, s.workflow_timeout,
                            s.concurrency_key, s.concurrency_limit, s.rate_key, s.cron,
                            s.timezone, s.catchup)
                           IS NOT DISTINCT FROM
                           (EXCLUDED.kind, EXCLUDED.function_name, EXCLUDED.queue,
                            EXCLUDED.priority, EXCLUDED.args::text, EXCLUDED.max_retries,
                            EXCLUDED.timeout_seconds, EXCLUDED.version,
                            EXCLUDED.workflow_timeout, EXCLUDED.concurrency_key,
                            EXCLUDED.concurrency_limit, EXCLUDED.rate_key, EXCLUDED.cron,
                            EXCLUDED.timezone, EXCLUDED.catchup)
                      THEN s.updated_at ELSE now() END
WHERE s.source = EXCLUDED.source
RETURNING s.name, s.source, s.kind, s.function_name, s.queue, s.args::text AS args, s.cron,
          s.timezone, s.catchup, s.paused, s.next_tick, s.last_tick, s.ticks_from,
          s.created_at, s.updated_at

-- name: prune_code_schedules
-- Schedules a worker's code declared once and declares no more: of the functions it imported
-- (the first parameter), those registered under a name not among the second.
DELETE FROM {s}.schedules
WHERE source = 'code' AND function_name = ANY ($1::text[]) AND name <> ALL ($2::text[])
RETURNING name

-- name: pause_schedule
UPDATE {s}.schedules SET paused = true, updated_at = now()
WHERE name = $1::text
RETURNING name

-- name: resume_schedule
-- Ticks that fell during the pause are not fired: they count again from now. (SET reads the
-- values before the update: a schedule that was not paused keeps its next tick.)
UPDATE {s}.schedules
SET paused = false,
    next_tick = CASE WHEN paused THEN NULL ELSE next_tick END,
    ticks_from = CASE WHEN paused THEN now() ELSE ticks_from END,
    updated_at = CASE WHEN paused THEN now() ELSE updated_at END
WHERE name = $1::text
RETURNING name

-- name: delete_schedule
DELETE FROM {s}.schedules WHERE name = $1::text RETURNING name, source

-- name: list_schedules
SELECT name, source, kind, function_name, queue, args::text AS args, cron, timezone, catchup,
       paused, next_tick, last_tick, ticks_from, created_at, updated_at
FROM {s}.schedules
ORDER BY name

-- name: trigger_schedule
-- One run now, outside the schedule's ticks.
SELECT id::text AS id FROM {s}.enqueue_scheduled($1::text, ARRAY[NULL]::timestamptz[]) AS id

-- name: due_schedules
-- The schedules due now (at most the first parameter, none of the names in the second, which
-- this worker skips), with the database's clock and the earliest tick not yet due: always one
-- row, whose schedule columns are NULL when none is due.
WITH later AS (
    SELECT min(next_tick) AS at FROM {s}.schedules
    WHERE NOT paused AND next_tick > now() AND name <> ALL ($2::text[])
)
SELECT now() AS now, later.at AS next_at, d.name, d.cron, d.timezone, d.catchup, d.next_tick,
       d.ticks_from
FROM later
LEFT JOIN LATERAL (
    SELECT s.name, s.cron, s.timezone, s.catchup, s.next_tick, s.ticks_from
    FROM {s}.schedules s
    WHERE NOT s.paused AND (s.next_tick IS NULL OR s.next_tick <= now())
      AND s.name <> ALL ($2::text[])
    ORDER BY s.next_tick NULLS FIRST
    LIMIT $1::int
) d ON true

-- name: fire_schedule
-- See fire_schedule() in 0008: fired is NULL when another worker was at it or the schedule
-- changed meanwhile.
SELECT {s}.fire_schedule($1::text, $2::timestamptz, $3::timestamptz[], $4::timestamptz) AS fired
