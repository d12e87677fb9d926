-- Cron schedules: a row per schedule, and on every execution the schedule and tick it was
-- fired for.
--
-- * schedules: what each tick enqueues (resolved once, as `.queue()` would: kind, function,
--   queue, arguments, retries, timeouts, flow-control keys), when it ticks (cron, timezone),
--   and where it is: next_tick, the earliest tick not yet fired (NULL: to compute from
--   ticks_from, the instant the schedule was created, changed or resumed). Ticks are computed
--   by the workers (a cron library, in the schedule's timezone): the database stores instants.
--   source: 'code' (declared on a decorator, registered by every worker that imports it) or
--   'api' (workflows.schedules.create); neither overwrites the other's row.
-- * executions.schedule_name/schedule_tick, UNIQUE together: one execution per schedule and
--   tick, however many workers fire it and whatever they read first; a manual trigger has no
--   tick (NULL: never a conflict).

CREATE TABLE {s}.schedules (
    name              text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 255),
    source            text NOT NULL CHECK (source = ANY (ARRAY['code', 'api'])),
    kind              text NOT NULL CHECK (kind = ANY (ARRAY['job', 'workflow'])),
    function_name     text NOT NULL,
    queue             text NOT NULL,
    priority          integer NOT NULL DEFAULT 0,
    args              json NOT NULL,
    max_retries       integer NOT NULL CHECK (max_retries >= 0),
    timeout_seconds   double precision CHECK (timeout_seconds > 0),
    version           integer,
    workflow_timeout  double precision CHECK (workflow_timeout > 0),
    concurrency_key   text,
    concurrency_limit integer CHECK (concurrency_limit >= 1),
    rate_key          text,
    cron              text NOT NULL,
    timezone          text NOT NULL,
    catchup           boolean NOT NULL DEFAULT false,
    paused            boolean NOT NULL DEFAULT false,
    next_tick         timestamptz,
    last_tick         timestamptz,
    ticks_from        timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- Every worker asks, each poll interval, which schedules are due and when the next one is.
CREATE INDEX schedules_due ON {s}.schedules (next_tick NULLS FIRST) WHERE NOT paused;

ALTER TABLE {s}.executions
    ADD COLUMN schedule_name text,
    ADD COLUMN schedule_tick timestamptz;
CREATE UNIQUE INDEX executions_schedule_tick ON {s}.executions (schedule_name, schedule_tick)
    WHERE schedule_name IS NOT NULL;

-- Runs of the schedule p_name, one per element of p_ticks (NULL: a manual trigger), enqueued
-- as its row says, their queue announced. A tick that has its execution already is skipped by
-- the unique key: that, not a read beforehand, is what keeps a tick from running twice.
-- Returns the ids inserted (none for an unknown name).
CREATE FUNCTION {s}.enqueue_scheduled(p_name text, p_ticks timestamptz[])
RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
DECLARE
    sch {s}.schedules;
    inserted uuid[];
BEGIN
    SELECT * INTO sch FROM {s}.schedules WHERE name = p_name;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    WITH ins AS (
        INSERT INTO {s}.executions AS e
            (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
             version, deadline, concurrency_key, concurrency_limit, rate_key,
             schedule_name, schedule_tick)
        SELECT {s}.new_id(), sch.kind, sch.function_name, sch.queue, sch.priority, sch.args,
               sch.max_retries, sch.timeout_seconds, now(), sch.version,
               now() + make_interval(secs => sch.workflow_timeout), sch.concurrency_key,
               sch.concurrency_limit, sch.rate_key, sch.name, t.tick
        FROM unnest(p_ticks) WITH ORDINALITY AS t(tick, ord)
        ORDER BY t.ord
        ON CONFLICT (schedule_name, schedule_tick) WHERE schedule_name IS NOT NULL DO NOTHING
        RETURNING e.id
    )
    SELECT array_agg(ins.id) INTO inserted FROM ins;
    IF inserted IS NOT NULL THEN
        PERFORM pg_notify('{work}', sch.queue);
        RETURN QUERY SELECT unnest(inserted);
    END IF;
END;
$$;

-- A worker fires the ticks p_ticks of schedule p_name and moves its next tick to p_next, if
-- the schedule is still where the worker saw it (next_tick = p_due, not paused) and no other
-- worker is at it: otherwise it does nothing and returns NULL (that worker, or a change of
-- the schedule, decides). Else the count of executions inserted (ticks already run are not).
CREATE FUNCTION {s}.fire_schedule(
    p_name text, p_due timestamptz, p_ticks timestamptz[], p_next timestamptz
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    fired integer;
BEGIN
    PERFORM 1 FROM {s}.schedules
    WHERE name = p_name AND NOT paused AND next_tick IS NOT DISTINCT FROM p_due
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT count(*) INTO fired FROM {s}.enqueue_scheduled(p_name, p_ticks);
    UPDATE {s}.schedules
    SET next_tick = p_next,
        last_tick = GREATEST(last_tick, (SELECT max(t) FROM unnest(p_ticks) AS t))
    WHERE name = p_name;
    RETURN fired;
END;
$$;
