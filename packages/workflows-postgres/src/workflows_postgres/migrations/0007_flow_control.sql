-- Flow control: limits that every worker sees alike, enforced where executions start (admit()).
--
-- * queues: a queue's settings: concurrency across the fleet, a rate, paused. A queue with no
--   row, or a row that limits nothing, is admitted as before 0007: no lock, no count.
-- * rate_limits: named rates shared by every execution with that rate_key, whatever its queue.
-- * rate_starts: one row per start under a rate (limiter 'q:<queue>' or 'k:<rate key>') in the
--   last period: a sliding window, so at most N starts fall in ANY window of the period, not
--   N per aligned window (which lets 2N through around a boundary).
-- * concurrency_keys: per key, how many executions hold one of its slots. A keyed execution
--   takes a slot as it is inserted (or made runnable again after it ended) or, when none is
--   free, waits "held": out of the claim index altogether, so 100,000 executions waiting on a
--   busy key cost a claim nothing. It gives the slot up when it ends (or is deleted), and the
--   next held one of the key (by priority, then age) takes it and its queue is announced.
--   Triggers do both, so every path that inserts or ends an execution keeps the count.

CREATE TABLE {s}.queues (
    name        text PRIMARY KEY,
    concurrency integer CHECK (concurrency >= 1),
    rate_starts integer CHECK (rate_starts >= 1),
    rate_period double precision CHECK (rate_period > 0 AND rate_period <= 604800),
    paused      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_starts IS NULL) = (rate_period IS NULL))
);

CREATE TABLE {s}.rate_limits (
    key        text PRIMARY KEY,
    starts     integer NOT NULL CHECK (starts >= 1),
    period     double precision NOT NULL CHECK (period > 0 AND period <= 604800),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {s}.rate_starts (
    limiter text NOT NULL,
    at      timestamptz NOT NULL
);
CREATE INDEX rate_starts_window ON {s}.rate_starts (limiter, at);

CREATE TABLE {s}.concurrency_keys (
    key    text PRIMARY KEY,
    active integer NOT NULL DEFAULT 0 CHECK (active >= 0)
);

ALTER TABLE {s}.executions
    ADD COLUMN concurrency_key text,
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit >= 1),
    ADD COLUMN rate_key text,
    ADD COLUMN held boolean NOT NULL DEFAULT false;

-- The most executions a worker can hold running, reported while it keeps to that bound (it
-- does while it serves a queue with a concurrency limit: workflows_worker.flow); NULL, as for
-- a worker of an older version, makes every admission to a limited queue it serves count.
ALTER TABLE {s}.worker_heartbeats ADD COLUMN running_bound integer;

-- Held executions leave the claim index; the next of a key is found through its own.
DROP INDEX {s}.executions_claim;
CREATE INDEX executions_claim ON {s}.executions (queue, priority DESC, run_at, id)
    WHERE status = 'pending' AND NOT held;
CREATE INDEX executions_held ON {s}.executions (concurrency_key, priority DESC, run_at, id)
    WHERE held AND status = 'pending';
-- A limited queue's running executions are counted through executions_running_by_worker
-- (0001), which holds every running row: few, whatever the backlog. An index of its own would
-- cost every admission an insert, to serve only the admissions near a limit.

-- Whether admissions to p_queues are unlimited (nothing to lock or count).
CREATE FUNCTION {s}.flow_free(p_queues text[]) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM {s}.queues q
                       WHERE q.name = ANY (p_queues)
                         AND (q.paused OR q.concurrency IS NOT NULL OR q.rate_starts IS NOT NULL))
       AND NOT EXISTS (SELECT 1 FROM {s}.rate_limits)
$$;

-- The room left under a rate (the caller holds the lock of the row that defines it).
CREATE FUNCTION {s}.rate_room(p_limiter text, p_starts integer, p_period float8)
RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.rate_starts
    WHERE limiter = p_limiter AND at <= clock_timestamp() - make_interval(secs => p_period);
    RETURN greatest(p_starts - (SELECT count(*) FROM {s}.rate_starts WHERE limiter = p_limiter), 0);
END;
$$;

-- Whether admissions to queue p_name (limit p_limit) by p_worker may skip the count: every
-- live worker serving it reports the most it can hold running (running_bound), their sum is
-- within the limit, and p_worker is one of them. Only live workers admit (a dead one stays in
-- worker_heartbeats, its bound counted, until its executions are recovered in the same
-- transaction that removes it): so whatever they admit, the queue's running executions cannot
-- pass the limit, and nothing needs counting. Admissions that count instead (near a limit)
-- must not run beside them: the queue's lock, shared for these and exclusive for those,
-- keeps them apart (queue_room()).
CREATE FUNCTION {s}.roomy(p_name text, p_limit integer, p_worker uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        bool_and(h.running_bound IS NOT NULL) AND bool_or(h.worker_id = p_worker)
        AND sum(h.running_bound) <= p_limit,
        false)
    FROM {s}.worker_heartbeats h
    WHERE p_name = ANY (h.queues)
$$;

-- How many executions of queue p_name may start now for p_worker (up to p_want), and the room
-- of its rate (NULL: none). Takes the queue's lock until the transaction ends: in shared mode
-- while the fleet cannot reach its concurrency limit (roomy(): admissions go on side by side,
-- nothing counted), else in exclusive mode, and then counts what runs: admissions near a limit
-- (or under a rate) take turns, and each sees the ones before it. A transaction that took the
-- shared lock never asks for the exclusive one (two such would wait for each other): a queue
-- it finds no longer roomy gets no room until its next round.
CREATE FUNCTION {s}.queue_room(
    p_name text, p_want integer, p_worker uuid,
    OUT room integer, OUT rate_room integer
)
LANGUAGE plpgsql AS $$
DECLARE
    q record;
    lock_key bigint := hashtextextended('{s}.queue ' || p_name, 0);
    held_shared text := COALESCE(current_setting('flow_control.shared_queue_locks', true), '');
    marker text := '/' || p_name || '/';
BEGIN
    room := p_want;
    SELECT * INTO q FROM {s}.queues WHERE name = p_name;
    IF NOT FOUND OR NOT (q.paused OR q.concurrency IS NOT NULL OR q.rate_starts IS NOT NULL) THEN
        RETURN;
    END IF;
    IF q.paused THEN
        room := 0;
        RETURN;
    END IF;
    IF q.rate_starts IS NULL
       AND (position(marker IN held_shared) > 0 OR {s}.roomy(p_name, q.concurrency, p_worker))
    THEN
        -- The lock only keeps counting admissions out: the bound holds whenever it was read.
        PERFORM pg_advisory_xact_lock_shared(lock_key);
        IF position(marker IN held_shared) = 0 THEN
            PERFORM set_config('flow_control.shared_queue_locks', held_shared || marker, true);
        ELSIF NOT {s}.roomy(p_name, q.concurrency, p_worker) THEN
            -- Held since an earlier admission of this transaction, and no longer roomy.
            room := 0;
        END IF;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(lock_key);
    IF q.concurrency IS NOT NULL THEN
        room := least(p_want, greatest(q.concurrency - (
            SELECT count(*) FROM {s}.executions e
            WHERE e.queue = p_name AND e.status = 'running'), 0));
    END IF;
    IF q.rate_starts IS NOT NULL THEN
        rate_room := {s}.rate_room('q:' || p_name, q.rate_starts, q.rate_period);
    END IF;
END;
$$;

-- Rate keys with no room left now (read without a lock: admissible() checks exactly).
CREATE FUNCTION {s}.spent_rate_keys(p_now timestamptz) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(array_agg(r.key), '{}')
    FROM {s}.rate_limits r
    WHERE r.starts <= (SELECT count(*) FROM {s}.rate_starts s
                       WHERE s.limiter = 'k:' || r.key
                         AND s.at > p_now - make_interval(secs => r.period))
$$;

-- Of candidates (p_ids with their queues and rate keys, in the order they would start), those
-- that may start now: no more than each queue's room (p_names/p_rooms/p_rate_rooms, from
-- queue_room()) and, for those that are starts (p_starts: not a workflow resuming), no more
-- than the room of their queue's rate and of their key's. Locks the rows of the rate keys it
-- reads, in key order, until the transaction ends.
CREATE FUNCTION {s}.admissible(
    p_ids uuid[], p_queues text[], p_rate_keys text[], p_starts boolean[],
    p_names text[], p_rooms integer[], p_rate_rooms integer[]
) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_key text;
    room integer[] := p_rooms;
    rate_room integer[] := p_rate_rooms;
    keys text[] := '{}';
    key_room integer[] := '{}';
    keep uuid[] := '{}';
    i integer;
    qi integer;
    ki integer;
BEGIN
    FOR v_key IN SELECT DISTINCT x FROM unnest(p_rate_keys) AS x WHERE x IS NOT NULL ORDER BY 1
    LOOP
        SELECT * INTO r FROM {s}.rate_limits WHERE key = v_key FOR UPDATE;
        IF FOUND THEN
            keys := keys || v_key;
            key_room := key_room || {s}.rate_room('k:' || v_key, r.starts, r.period);
        END IF;
    END LOOP;
    FOR i IN 1 .. COALESCE(cardinality(p_ids), 0) LOOP
        qi := array_position(p_names, p_queues[i]);
        CONTINUE WHEN qi IS NULL OR room[qi] <= 0;
        IF p_starts[i] THEN
            ki := array_position(keys, p_rate_keys[i]);
            CONTINUE WHEN rate_room[qi] <= 0 OR (ki IS NOT NULL AND key_room[ki] <= 0);
            rate_room[qi] := rate_room[qi] - 1;
            IF ki IS NOT NULL THEN
                key_room[ki] := key_room[ki] - 1;
            END IF;
        END IF;
        room[qi] := room[qi] - 1;
        keep := keep || p_ids[i];
    END LOOP;
    RETURN keep;
END;
$$;

-- The admission point (0006), now with flow control: see 0006 for the modes. Each queue of the
-- admission gets its room from queue_room() (in name order: no two admissions deadlock);
-- when every queue has room for all that is asked and no rate is involved, the admission is
-- the one statement of 0006 (plus NOT held). Otherwise an execution starts only within its
-- queue's room and its rates (admissible()). Executions on concurrency keys are within their
-- key's limit whenever they are not held (the triggers below), and a held one is never a
-- candidate. 'new' inserts only what is admitted: the caller inserts the rest as pending.
-- Admissions are timed by clock_timestamp(), not by now() (the transaction's start, perhaps
-- long before); one under limits once their locks are held and their rooms counted, and each
-- of its starts is recorded by its rates at that time. Rooms are counted from the clock too
-- (rate_room()), so an admission that waited long for a lock neither counts a stale window
-- nor records into one already pruned by those that went before it: of any two starts less
-- than a period apart, the later to take the rate's lock counted the earlier, so a window
-- never holds more than the rate allows.
CREATE OR REPLACE FUNCTION {s}.admit(
    p_worker uuid, p_from text, p_ids uuid[] DEFAULT NULL, p_wakeups bigint[] DEFAULT NULL,
    p_new jsonb DEFAULT NULL, p_queues text[] DEFAULT NULL, p_limit integer DEFAULT 0,
    p_names text[] DEFAULT '{}', p_max integer[] DEFAULT '{}', p_exclude uuid[] DEFAULT '{}'
) RETURNS SETOF {s}.executions
LANGUAGE plpgsql AS $$
DECLARE
    free boolean;
    roomy boolean;
    got bigint;
    rest uuid[];
    queues text[];
    v_at timestamptz := clock_timestamp();
    v_queue text;
    want integer;
    r_names text[] := '{}';
    r_rooms integer[] := '{}';
    r_rates integer[] := '{}';
    qr record;
    keep uuid[];
    spent text[];
    c_ids uuid[];
    c_queues text[];
    c_keys text[];
    c_starts boolean[];
BEGIN
    -- Each mode first as if nothing limited it, in the statements of 0006 (plus NOT held):
    -- the common case pays for one check and nothing else.
    IF p_from = 'claim' THEN
        IF p_limit <= 0 THEN
            RETURN;
        END IF;
        -- The check is the statement's own: a claim that finds work costs no more. Run again
        -- without it (roomy) when the limits found are ones the fleet cannot reach.
        roomy := false;
        LOOP
        RETURN QUERY
        UPDATE {s}.executions e
        SET status = 'running', worker_id = p_worker, lease = e.lease + 1,
            attempts = CASE WHEN e.kind = 'workflow' THEN 1 ELSE e.attempts + 1 END,
            started_at = COALESCE(e.started_at, v_at)
        -- An id array, not a join: the plan (generic, so not knowing how many) stays on the
        -- key. Candidates chosen in the same statement: a statement more cost 6% of the jobs
        -- one worker process drains.
        WHERE e.id = ANY (ARRAY(
            SELECT c.id
            FROM unnest(p_queues) AS q(queue)
            CROSS JOIN LATERAL (
                SELECT x.id, x.priority, x.run_at
                FROM {s}.executions x
                WHERE x.status = 'pending' AND NOT x.held AND x.queue = q.queue
                  AND x.run_at <= now()
                  AND (x.sticky_worker_id IS NULL OR x.sticky_worker_id = p_worker
                       OR x.run_at <= now() - interval '200 milliseconds'
                       OR NOT EXISTS (SELECT 1 FROM {s}.worker_heartbeats h
                                      WHERE h.worker_id = x.sticky_worker_id))
                  AND NOT (x.kind = 'workflow' AND x.version > COALESCE(
                        (SELECT m.max FROM unnest(p_names, p_max) AS m(name, max)
                         WHERE m.name = x.name), 2147483647))
                  AND x.id <> ALL (p_exclude)
                ORDER BY x.priority DESC, x.run_at, x.id
                LIMIT p_limit
                FOR UPDATE SKIP LOCKED
            ) c
            ORDER BY c.priority DESC, c.run_at, c.id
            LIMIT p_limit))
          AND (roomy OR NOT EXISTS (SELECT 1 FROM {s}.queues f
                                    WHERE f.name = ANY (p_queues)
                                      AND (f.paused OR f.concurrency IS NOT NULL
                                           OR f.rate_starts IS NOT NULL)
                                    UNION ALL
                                    SELECT 1 FROM {s}.rate_limits))
        RETURNING e.*;
        IF FOUND OR roomy THEN
            RETURN;
        END IF;
        -- Nothing claimed: nothing to claim, or a limit to look at. (flow_free() written out:
        -- a SQL function with subqueries is not inlined, and its call costs more than this
        -- check, paid by every claim under a limit.)
        IF NOT EXISTS (SELECT 1 FROM {s}.queues f
                       WHERE f.name = ANY (p_queues)
                         AND (f.paused OR f.concurrency IS NOT NULL
                              OR f.rate_starts IS NOT NULL)
                       UNION ALL
                       SELECT 1 FROM {s}.rate_limits) THEN
            RETURN;
        END IF;
        -- Each queue's room, in name order (no two admissions deadlock).
        roomy := NOT EXISTS (SELECT 1 FROM {s}.rate_limits);
        FOR v_queue IN SELECT DISTINCT x FROM unnest(p_queues) AS x ORDER BY 1 LOOP
            qr := {s}.queue_room(v_queue, p_limit, p_worker);
            r_names := r_names || v_queue;
            r_rooms := r_rooms || qr.room;
            r_rates := r_rates || qr.rate_room;
            roomy := roomy AND qr.room >= p_limit AND qr.rate_room IS NULL;
        END LOOP;
        EXIT WHEN NOT roomy;
        END LOOP;
    ELSIF p_from = 'new' THEN
        -- As for the claim, the check is each row's own: a row on a limited queue, or under a
        -- rate key with a rate, is left for below. A keyed one never starts this way: it may
        -- have to wait for its key (the caller inserts it pending).
        RETURN QUERY
        INSERT INTO {s}.executions AS e
            (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
             version, deadline, parent_id, parent_seq, concurrency_key, concurrency_limit,
             rate_key, status, worker_id, lease, attempts, started_at)
        SELECT COALESCE(r.id, {s}.new_id()), r.kind, r.name, r.queue, r.priority,
               r.args::json, r.max_retries, r.timeout_seconds, now(), r.version, r.deadline,
               r.parent_id, r.parent_seq, r.concurrency_key, r.concurrency_limit, r.rate_key,
               -- Started as it was enqueued.
               'running', p_worker, 1, 1, now()
        FROM jsonb_to_recordset(p_new)
             AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                  max_retries integer, timeout_seconds float8, version integer,
                  deadline timestamptz, parent_id uuid, parent_seq integer,
                  concurrency_key text, concurrency_limit integer, rate_key text)
        WHERE r.concurrency_key IS NULL
          AND NOT EXISTS (SELECT 1 FROM {s}.queues f
                          WHERE f.name = r.queue
                            AND (f.paused OR f.concurrency IS NOT NULL
                                 OR f.rate_starts IS NOT NULL))
          AND (r.rate_key IS NULL
               OR NOT EXISTS (SELECT 1 FROM {s}.rate_limits k WHERE k.key = r.rate_key))
        RETURNING e.*;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got = jsonb_array_length(p_new) THEN
            RETURN;
        END IF;
        -- The rest (keyed ones aside): those limits may hold back, to be decided below.
        SELECT jsonb_agg(x.value ORDER BY x.ord) INTO p_new
        FROM jsonb_array_elements(p_new) WITH ORDINALITY AS x(value, ord)
        WHERE x.value->>'concurrency_key' IS NULL
          AND NOT EXISTS (SELECT 1 FROM {s}.executions e
                          WHERE e.id = (x.value->>'id')::uuid);
        IF p_new IS NULL THEN
            RETURN;
        END IF;
        queues := ARRAY(SELECT DISTINCT x->>'queue' FROM jsonb_array_elements(p_new) AS x);
    ELSE
        IF cardinality(p_ids) IS NULL OR cardinality(p_ids) = 0 THEN
            RETURN;
        END IF;
        -- As for the claim, the check is each row's own; a workflow resuming (not a start)
        -- passes any rate.
        RETURN QUERY
        UPDATE {s}.executions e
        SET status = 'running', worker_id = p_worker, lease = e.lease + 1,
            attempts = CASE WHEN e.kind = 'workflow' THEN 1 ELSE e.attempts + 1 END,
            started_at = COALESCE(e.started_at, v_at),
            wakeups = e.wakeups + COALESCE(p_wakeups[array_position(p_ids, e.id)], 0),
            run_at = CASE WHEN p_from = 'waiting' THEN now() ELSE e.run_at END
        WHERE e.id = ANY (p_ids) AND e.status = p_from
          AND NOT EXISTS (SELECT 1 FROM {s}.queues f
                          WHERE f.name = e.queue
                            AND (f.paused OR f.concurrency IS NOT NULL
                                 OR f.rate_starts IS NOT NULL))
          AND (e.rate_key IS NULL OR (e.kind = 'workflow' AND e.started_at IS NOT NULL)
               OR NOT EXISTS (SELECT 1 FROM {s}.rate_limits k WHERE k.key = e.rate_key))
        RETURNING e.*;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got = cardinality(p_ids) THEN
            RETURN;
        END IF;
        -- The rest: still in p_from (the others moved on), for limits to decide below.
        rest := ARRAY(SELECT e.id FROM {s}.executions e
                      WHERE e.id = ANY (p_ids) AND e.status = p_from);
        IF cardinality(rest) = 0 THEN
            RETURN;
        END IF;
        queues := ARRAY(SELECT DISTINCT e.queue FROM {s}.executions e WHERE e.id = ANY (rest));
    END IF;
    IF p_from = 'claim' THEN
        -- Rooms taken above, and not roomy.
        free := false;
    ELSE
        IF {s}.flow_free(queues) THEN
            -- Nothing limits them (a limit lifted meanwhile): the rows left are no longer to
            -- be admitted.
            RETURN;
        END IF;
        -- Limited: each queue's room, in name order (no two admissions deadlock).
        free := NOT EXISTS (SELECT 1 FROM {s}.rate_limits);
        FOR v_queue, want IN
            SELECT q.queue, CASE WHEN p_from = 'new' THEN (
                                     SELECT count(*) FROM jsonb_array_elements(p_new) n
                                     WHERE n->>'queue' = q.queue)
                                 ELSE (SELECT count(*) FROM {s}.executions e
                                       WHERE e.id = ANY (rest) AND e.queue = q.queue) END
            FROM unnest(queues) AS q(queue) ORDER BY 1
        LOOP
            qr := {s}.queue_room(v_queue, want, p_worker);
            r_names := r_names || v_queue;
            r_rooms := r_rooms || qr.room;
            r_rates := r_rates || qr.rate_room;
            -- Room for all asked, and no rate: as if free.
            free := free AND qr.room >= want AND qr.rate_room IS NULL;
        END LOOP;
    END IF;
    IF p_from = 'new' THEN
        IF NOT free THEN
            SELECT {s}.admissible(array_agg(r.id ORDER BY r.ord), array_agg(r.queue ORDER BY r.ord),
                                  array_agg(r.rate_key ORDER BY r.ord),
                                  array_agg(true ORDER BY r.ord), r_names, r_rooms, r_rates)
            INTO keep
            FROM ROWS FROM (jsonb_to_recordset(p_new) AS (id uuid, queue text, rate_key text))
                 WITH ORDINALITY AS r(id, queue, rate_key, ord);
        END IF;
        -- Every limit's lock is held and counted: the starts are timed now (see above).
        v_at := clock_timestamp();
        RETURN QUERY
        WITH a AS (
            INSERT INTO {s}.executions AS e
                (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
                 version, deadline, parent_id, parent_seq, concurrency_key, concurrency_limit,
                 rate_key, status, worker_id, lease, attempts, started_at)
            SELECT COALESCE(r.id, {s}.new_id()), r.kind, r.name, r.queue, r.priority,
                   r.args::json, r.max_retries, r.timeout_seconds, now(), r.version, r.deadline,
                   r.parent_id, r.parent_seq, r.concurrency_key, r.concurrency_limit, r.rate_key,
                   'running', p_worker, 1, 1, v_at
            FROM jsonb_to_recordset(p_new)
                 AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                      max_retries integer, timeout_seconds float8, version integer,
                      deadline timestamptz, parent_id uuid, parent_seq integer,
                      concurrency_key text, concurrency_limit integer, rate_key text)
            WHERE (free OR r.id = ANY (keep)) AND r.concurrency_key IS NULL
            RETURNING e.*
        ), counted AS (
            INSERT INTO {s}.rate_starts (limiter, at)
            SELECT l.limiter, v_at FROM a, {s}.limiters_of(a.queue, a.rate_key) l
        )
        SELECT * FROM a;
        RETURN;
    END IF;
    IF p_from = 'claim' THEN
        -- Candidates as above, but none from a queue with no room, and (unless a workflow
        -- resuming) none under a spent rate; then admissible() decides exactly.
        spent := {s}.spent_rate_keys(v_at);
        SELECT array_agg(c.id ORDER BY c.priority DESC, c.run_at, c.id),
               array_agg(c.queue ORDER BY c.priority DESC, c.run_at, c.id),
               array_agg(c.rate_key ORDER BY c.priority DESC, c.run_at, c.id),
               array_agg(c.start ORDER BY c.priority DESC, c.run_at, c.id)
        INTO c_ids, c_queues, c_keys, c_starts
        FROM (
            SELECT x.*
            FROM unnest(r_names, r_rooms, r_rates) AS q(queue, room, rate)
            CROSS JOIN LATERAL (
                SELECT x.id, x.queue, x.rate_key, x.priority, x.run_at,
                       (x.kind <> 'workflow' OR x.started_at IS NULL) AS start
                FROM {s}.executions x
                WHERE x.status = 'pending' AND NOT x.held AND x.queue = q.queue
                  AND x.run_at <= now()
                  AND (x.sticky_worker_id IS NULL OR x.sticky_worker_id = p_worker
                       OR x.run_at <= now() - interval '200 milliseconds'
                       OR NOT EXISTS (SELECT 1 FROM {s}.worker_heartbeats h
                                      WHERE h.worker_id = x.sticky_worker_id))
                  AND NOT (x.kind = 'workflow' AND x.version > COALESCE(
                        (SELECT m.max FROM unnest(p_names, p_max) AS m(name, max)
                         WHERE m.name = x.name), 2147483647))
                  AND x.id <> ALL (p_exclude)
                  AND ((COALESCE(q.rate, 1) > 0
                        AND (x.rate_key IS NULL OR x.rate_key <> ALL (spent)))
                       OR (x.kind = 'workflow' AND x.started_at IS NOT NULL))
                ORDER BY x.priority DESC, x.run_at, x.id
                LIMIT q.room
                FOR UPDATE SKIP LOCKED
            ) x
            WHERE q.room > 0
            ORDER BY x.priority DESC, x.run_at, x.id
            LIMIT p_limit
        ) c;
        IF c_ids IS NULL THEN
            RETURN;
        END IF;
        keep := {s}.admissible(c_ids, c_queues, c_keys, c_starts, r_names, r_rooms, r_rates);
    ELSIF free THEN
        keep := rest;
    ELSE
        SELECT {s}.admissible(
                   array_agg(e.id ORDER BY o.ord), array_agg(e.queue ORDER BY o.ord),
                   array_agg(e.rate_key ORDER BY o.ord),
                   array_agg(e.kind <> 'workflow' OR e.started_at IS NULL ORDER BY o.ord),
                   r_names, r_rooms, r_rates)
        INTO keep
        FROM unnest(rest) WITH ORDINALITY AS o(id, ord)
        JOIN {s}.executions e ON e.id = o.id
        WHERE e.status = p_from;
    END IF;
    -- Every limit's lock is held and counted: the starts are timed now (see above).
    v_at := clock_timestamp();
    RETURN QUERY
    WITH a AS (
        UPDATE {s}.executions e
        SET status = 'running', worker_id = p_worker, lease = e.lease + 1,
            attempts = CASE WHEN e.kind = 'workflow' THEN 1 ELSE e.attempts + 1 END,
            started_at = COALESCE(e.started_at, v_at),
            wakeups = e.wakeups + COALESCE(p_wakeups[array_position(p_ids, e.id)], 0),
            run_at = CASE WHEN p_from = 'waiting' THEN now() ELSE e.run_at END
        WHERE e.id = ANY (keep) AND e.status = CASE WHEN p_from = 'claim' THEN 'pending'
                                                    ELSE p_from END
        RETURNING e.*
    ), counted AS (
        -- A start is a job's or an activity's attempt, or a workflow's first activation (its
        -- started_at is the one just set).
        INSERT INTO {s}.rate_starts (limiter, at)
        SELECT l.limiter, v_at FROM a, {s}.limiters_of(a.queue, a.rate_key) l
        WHERE a.kind <> 'workflow' OR a.started_at = v_at
    )
    SELECT * FROM a;
END;
$$;

-- The rates an execution of queue p_queue with rate key p_key starts under.
CREATE FUNCTION {s}.limiters_of(p_queue text, p_key text) RETURNS TABLE (limiter text)
LANGUAGE sql STABLE AS $$
    SELECT 'q:' || q.name FROM {s}.queues q WHERE q.name = p_queue AND q.rate_starts IS NOT NULL
    UNION ALL
    SELECT 'k:' || r.key FROM {s}.rate_limits r WHERE r.key = p_key
$$;

-- A keyed execution takes a slot of its key as it is inserted; with none free it is held (left
-- pending, out of the claim index). One inserted already running (a route that skips the
-- claim) must find a slot.
-- Whether a slot of key p_key (limit p_limit) was free and is now taken. The key's row stays
-- locked until commit, taken or not: takers of one key count in turn. An execution in status
-- p_status that needs a slot at once (not pending) and finds none is refused.
CREATE FUNCTION {s}.take_slot(p_key text, p_limit integer, p_status text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    taken boolean;
BEGIN
    INSERT INTO {s}.concurrency_keys AS k (key, active) VALUES (p_key, 1)
    ON CONFLICT (key) DO UPDATE SET active = k.active + 1
        WHERE k.active < COALESCE(p_limit, 1)
    RETURNING true INTO taken;
    IF taken IS NULL AND p_status <> 'pending' THEN
        RAISE EXCEPTION 'no free slot of concurrency key % for an execution started at once',
            p_key
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN taken IS NOT NULL;
END;
$$;

CREATE FUNCTION {s}.take_key_slot() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.held := NEW.status IN ('pending', 'running', 'waiting')
                AND NOT {s}.take_slot(NEW.concurrency_key, NEW.concurrency_limit, NEW.status);
    RETURN NEW;
END;
$$;

-- A keyed execution that held a slot of p_key ended (or was deleted): the slot goes to the next
-- held execution of the key, by priority then age, as many as the key's limit allows.
CREATE FUNCTION {s}.free_key_slot_of(p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    nxt record;
BEGIN
    UPDATE {s}.concurrency_keys SET active = greatest(active - 1, 0)
    WHERE key = p_key
    RETURNING active INTO n;
    IF n IS NULL THEN
        RETURN;
    END IF;
    LOOP
        SELECT e.id, e.queue, COALESCE(e.concurrency_limit, 1) AS lim INTO nxt
        FROM {s}.executions e
        WHERE e.held AND e.status = 'pending' AND e.concurrency_key = p_key
        ORDER BY e.priority DESC, e.run_at, e.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND OR n >= nxt.lim;
        UPDATE {s}.executions SET held = false WHERE id = nxt.id;
        n := n + 1;
        PERFORM pg_notify('{work}', nxt.queue);
    END LOOP;
    UPDATE {s}.concurrency_keys SET active = n WHERE key = p_key;
END;
$$;

CREATE FUNCTION {s}.free_key_slot() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.free_key_slot_of(OLD.concurrency_key);
    RETURN NULL;
END;
$$;

-- After an update of a keyed execution's status (the trigger's condition says which): an end
-- frees its slot; a return to an active status takes one, or leaves it held. One made
-- running that way without a free slot is refused, as take_key_slot() refuses it.
CREATE FUNCTION {s}.key_slot_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('pending', 'running', 'waiting') THEN
        PERFORM {s}.free_key_slot_of(OLD.concurrency_key);
    ELSE
        UPDATE {s}.executions
        SET held = NOT {s}.take_slot(NEW.concurrency_key, NEW.concurrency_limit, NEW.status)
        WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER executions_key_slot_insert BEFORE INSERT ON {s}.executions
FOR EACH ROW WHEN (NEW.concurrency_key IS NOT NULL)
EXECUTE FUNCTION {s}.take_key_slot();

-- One trigger for both changes of a keyed execution's status that matter (one trigger, not
-- two, is all every other update of a status pays for): an end gives its slot up; a return
-- from an end (a requeue) takes one again, or waits held.
CREATE TRIGGER executions_key_slot_update AFTER UPDATE OF status ON {s}.executions
FOR EACH ROW WHEN (
    (OLD.concurrency_key IS NOT NULL AND NOT OLD.held
     AND OLD.status IN ('pending', 'running', 'waiting')
     AND NEW.status IN ('completed', 'failed', 'cancelled'))
    OR (NEW.concurrency_key IS NOT NULL
        AND OLD.status IN ('completed', 'failed', 'cancelled')
        AND NEW.status IN ('pending', 'running', 'waiting')))
EXECUTE FUNCTION {s}.key_slot_changed();

CREATE TRIGGER executions_key_slot_delete AFTER DELETE ON {s}.executions
FOR EACH ROW WHEN (OLD.concurrency_key IS NOT NULL AND NOT OLD.held
                   AND OLD.status IN ('pending', 'running', 'waiting'))
EXECUTE FUNCTION {s}.free_key_slot();

-- insert_plans (0006) with the children's flow-control columns. An eager child its queue's
-- limits refuse (a limit set since its worker last looked) is inserted pending like the
-- others: the worker's run of it, begun ahead of this write, is fenced off (its claim never
-- existed) and it runs once a claim admits it.
CREATE OR REPLACE FUNCTION {s}.insert_plans(p_worker uuid, p_items jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    eager jsonb;
    others jsonb;
    admitted uuid[];
    announced bigint;
BEGIN
    INSERT INTO {s}.workflow_steps
        (workflow_id, seq, kind, name, status, execution_id, fire_at, result, delivered_in)
    SELECT (i.value->>'wf')::uuid, r.seq, r.kind, r.name, r.status, r.exec,
           CASE WHEN r.seconds IS NULL THEN NULL
                ELSE now() + make_interval(secs => r.seconds) END,
           r.result::json, r.delivered
    FROM jsonb_array_elements(p_items) AS i,
         jsonb_to_recordset(i.value->'steps')
             AS r(seq integer, kind text, name text, status text, exec uuid, seconds float8,
                  result text, delivered integer);
    SELECT jsonb_agg(c.value) FILTER (WHERE (c.value->>'eager')::boolean),
           jsonb_agg(c.value) FILTER (WHERE NOT (c.value->>'eager')::boolean)
    INTO eager, others
    FROM jsonb_array_elements(p_items) AS i, jsonb_array_elements(i.value->'children') AS c;
    IF eager IS NOT NULL THEN
        SELECT array_agg(a.id) INTO admitted FROM {s}.admit(p_worker, 'new', p_new => eager) a;
        IF COALESCE(cardinality(admitted), 0) < jsonb_array_length(eager) THEN
            SELECT COALESCE(others, '[]'::jsonb) || COALESCE(jsonb_agg(c.value), '[]'::jsonb)
            INTO others
            FROM jsonb_array_elements(eager) AS c
            WHERE NOT ((c.value->>'id')::uuid = ANY (COALESCE(admitted, '{}')));
            IF jsonb_array_length(others) = 0 THEN
                others := NULL;
            END IF;
        END IF;
    END IF;
    IF others IS NULL THEN
        RETURN;
    END IF;
    WITH ins AS (
        INSERT INTO {s}.executions
            (id, kind, name, queue, priority, args, max_retries, timeout_seconds, version,
             deadline, parent_id, parent_seq, concurrency_key, concurrency_limit, rate_key)
        SELECT r.id, r.kind, r.name, r.queue, r.priority, r.args::json, r.max_retries,
               r.timeout_seconds, r.version,
               CASE WHEN r.workflow_timeout IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.workflow_timeout) END,
               r.parent_id, r.parent_seq, r.concurrency_key, r.concurrency_limit, r.rate_key
        FROM jsonb_to_recordset(others)
             AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                  max_retries integer, timeout_seconds float8, version integer,
                  workflow_timeout float8, parent_id uuid, parent_seq integer,
                  concurrency_key text, concurrency_limit integer, rate_key text)
        RETURNING queue, held
    )
    SELECT count(*) INTO announced
    FROM (SELECT DISTINCT queue FROM ins WHERE NOT held) q,
         LATERAL (SELECT pg_notify('{work}', q.queue)) n;
END;
$$;

-- enqueue (0006) with a call's flow-control columns. A job with a concurrency key or a rate key
-- never goes straight to an idle worker; one its queue's limits refuse (admit() decides) is
-- enqueued as any other.
DROP FUNCTION {s}.enqueue(
    text, text, text, integer, text, integer, float8, timestamptz, float8, text, integer,
    float8, boolean);
CREATE FUNCTION {s}.enqueue(
    p_kind text, p_name text, p_queue text, p_priority integer, p_args text,
    p_retries integer, p_timeout float8, p_run_at timestamptz, p_delay float8,
    p_key text, p_version integer, p_wf_timeout float8, p_handoff boolean,
    p_concurrency_key text DEFAULT NULL, p_concurrency_limit integer DEFAULT NULL,
    p_rate_key text DEFAULT NULL
) RETURNS TABLE (id uuid, handed_to uuid)
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid;
    due timestamptz;
    is_held boolean;
    taker uuid;
BEGIN
    IF p_handoff AND p_kind = 'job' AND p_run_at IS NULL AND COALESCE(p_delay, 0) <= 0
       AND p_key IS NULL AND p_concurrency_key IS NULL AND p_rate_key IS NULL THEN
        DELETE FROM {s}.worker_offers o
        WHERE o.worker_id = (SELECT f.worker_id FROM {s}.worker_offers f
                             WHERE f.queues @> ARRAY[p_queue] AND f.expires_at > now()
                             LIMIT 1 FOR UPDATE SKIP LOCKED)
          -- Free: the worker's listening session is gone, and the worker with it.
          AND NOT pg_try_advisory_xact_lock_shared(o.lock_key)
        RETURNING o.worker_id INTO taker;
        IF taker IS NOT NULL THEN
            -- A limit set meanwhile may refuse it: then it is enqueued as any other.
            SELECT a.id, a.worker_id INTO new_id, handed_to
            FROM {s}.admit(taker, 'new', p_new => jsonb_build_array(jsonb_build_object(
                'kind', p_kind, 'name', p_name, 'queue', p_queue, 'priority', p_priority,
                'args', p_args, 'max_retries', p_retries, 'timeout_seconds', p_timeout,
                'version', p_version, 'id', {s}.new_id()))) a;
            IF new_id IS NOT NULL THEN
                id := new_id;
                PERFORM pg_notify('{start}', handed_to::text || ' ' || new_id::text);
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;
    END IF;
    INSERT INTO {s}.executions AS e
        (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
         idempotency_key, version, deadline, concurrency_key, concurrency_limit, rate_key)
    VALUES ({s}.new_id(), p_kind, p_name, p_queue, p_priority, p_args::json, p_retries,
            p_timeout,
            COALESCE(p_run_at, now() + make_interval(secs => COALESCE(p_delay, 0))),
            p_key, p_version, now() + make_interval(secs => p_wf_timeout),
            p_concurrency_key, p_concurrency_limit, p_rate_key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING e.id, e.run_at, e.held INTO new_id, due, is_held;
    IF new_id IS NULL THEN
        RETURN;
    END IF;
    id := new_id;
    IF due <= now() AND NOT is_held THEN
        PERFORM pg_notify('{work}', p_queue);
    END IF;
    RETURN NEXT;
END;
$$;

-- advance (0006): a workflow its activation ends may be refused by its queue's limits.
-- A worker's batch of workflow activations, one commit for all: p_items is a jsonb array of
-- activate()'s objects, each also with "lease" (the workflow's claim) and, for an activity's
-- final outcome run by the worker's copy of the workflow, "act" (its id), "act_lease",
-- "seq" (its step), "act_status", "act_result", "act_error". Two kinds of item:
--   * an activation of a workflow the worker claimed ("act" null): as apply_activation;
--   * an activity's final outcome with the activation the worker's copy of the workflow ran
--     on it: written together when the workflow is still as that copy saw it (waiting on this
--     worker, same lease and wakeups, not cancelled).
-- Items go in order, those of one workflow next to each other, so several of one workflow
-- chain. For each item (1-based), returns:
--   stale     the claim (the workflow's or the activity's) was lost: nothing written;
--   fallback  the workflow changed meanwhile (signal, cancel, another claim): the outcome is
--             recorded as any other (step resolved but not delivered, workflow woken) and the
--             activation dropped;
--   waiting / pending / completed / failed / cancelled  the activation was applied;
--   claimed   the activation ends a workflow that still has executions running: it is left
--             claimed by the caller (lease given), which applies it and closes them.
-- The workflow row is locked before the activity's, as activate() and cancel do.
CREATE OR REPLACE FUNCTION {s}.advance(p_worker uuid, p_items jsonb)
RETURNS TABLE (item integer, outcome text, lease bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    wf record;
    found_wf boolean;
    fast boolean;
    cur_lease bigint;
    -- An array of items, appended in place (a jsonb array would be copied on every append).
    deferred jsonb[] := '{}';
BEGIN
    -- Each item's fields typed once, with the next item's workflow beside it.
    FOR r IN
        SELECT x.ord::integer AS i, x.value AS it, (x.value->>'wf')::uuid AS wf,
               lead(x.value->>'wf') OVER (ORDER BY x.ord) AS next_wf,
               (x.value->>'lease')::bigint AS wf_lease,
               (x.value->>'wakeups')::bigint AS wakeups,
               (x.value->>'number')::integer AS number,
               x.value->>'outcome' AS wf_outcome,
               (x.value->>'act')::uuid AS act,
               (x.value->>'act_lease')::bigint AS act_lease,
               (x.value->>'seq')::integer AS seq,
               x.value->>'act_status' AS act_status,
               x.value->>'act_result' AS act_result,
               x.value->>'act_error' AS act_error,
               jsonb_array_length(x.value->'signals') AS signals
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS x(value, ord)
        ORDER BY x.ord
    LOOP
        item := r.i;
        lease := NULL;
        cur_lease := r.wf_lease;
        IF r.act IS NOT NULL THEN
            SELECT e.status, e.lease, e.wakeups, e.sticky_worker_id, e.cancel_requested, e.queue
            INTO wf
            FROM {s}.executions e WHERE e.id = r.wf
            FOR UPDATE;
            found_wf := FOUND;
            UPDATE {s}.executions e
            SET status = r.act_status, result = r.act_result::json,
                error = COALESCE(r.act_error::jsonb, e.error), finished_at = now(),
                worker_id = NULL
            WHERE e.id = r.act AND e.lease = r.act_lease AND e.status = 'running';
            IF NOT FOUND THEN
                outcome := 'stale';
                RETURN NEXT;
                CONTINUE;
            END IF;
            fast := found_wf AND wf.status = 'waiting' AND wf.lease = cur_lease
                    AND wf.wakeups = r.wakeups AND wf.sticky_worker_id = p_worker
                    AND NOT wf.cancel_requested;
            UPDATE {s}.workflow_steps st
            SET status = r.act_status, result = r.act_result::json,
                error = r.act_error::json, resolved_at = now(),
                delivered_in = CASE WHEN fast THEN r.number END
            WHERE st.workflow_id = r.wf AND st.seq = r.seq AND st.status = 'scheduled';
            IF NOT FOUND THEN
                -- The step was closed meanwhile (the workflow cancelled or ended).
                outcome := 'fallback';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF NOT fast THEN
                PERFORM {s}.wake(ARRAY[r.wf]);
                outcome := 'fallback';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF r.wf_outcome = 'blocked' AND r.signals = 0
               AND r.next_wf IS DISTINCT FROM r.it->>'wf' THEN
                -- Still waiting here: the row stays as it is; its new steps and executions
                -- are inserted with those of the batch's other such items, at the end
                -- (unless the workflow's next item, right after, needs them).
                deferred := deferred || r.it;
                outcome := 'waiting';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF r.wf_outcome = 'blocked' THEN
                PERFORM {s}.insert_plans(p_worker, jsonb_build_array(r.it));
                IF {s}.consume_signals(
                       r.wf, ARRAY(SELECT jsonb_array_elements_text(r.it->'signals'))) THEN
                    PERFORM {s}.wake(ARRAY[r.wf], ARRAY[0::bigint]);
                    outcome := 'pending';
                ELSE
                    outcome := 'waiting';
                END IF;
                RETURN NEXT;
                CONTINUE;
            END IF;
            -- The activation ends the workflow: admit it back to this worker, then apply it
            -- as any other. Its queue's limits may refuse it: then the outcome is recorded as
            -- any other (the step not delivered, the workflow woken) and a claim replays it.
            SELECT a.lease INTO cur_lease FROM {s}.admit(p_worker, 'waiting', ARRAY[r.wf]) a;
            IF cur_lease IS NULL THEN
                UPDATE {s}.workflow_steps SET delivered_in = NULL
                WHERE workflow_id = r.wf AND seq = r.seq;
                PERFORM {s}.wake(ARRAY[r.wf]);
                outcome := 'fallback';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        IF r.wf_outcome <> 'blocked' AND EXISTS (
            SELECT 1 FROM {s}.executions x
            WHERE x.parent_id = r.wf AND x.status IN ('pending', 'running', 'waiting')
        ) THEN
            -- What it started and never waited for ends with it: the caller does that.
            outcome := 'claimed';
            lease := cur_lease;
            RETURN NEXT;
            CONTINUE;
        END IF;
        outcome := coalesce({s}.activate(p_worker, r.it, cur_lease), 'stale');
        RETURN NEXT;
    END LOOP;
    IF cardinality(deferred) > 0 THEN
        PERFORM {s}.insert_plans(p_worker, to_jsonb(deferred));
    END IF;
END;
$$;


-- A queue's settings changed: p_set_* say which of them the call sets (NULL values clear a
-- limit). The change applies to the admissions that begin after it commits; one under way at
-- that instant, like the executions running then, goes on under the old settings. The queue
-- is announced: it may have more room.
CREATE FUNCTION {s}.set_queue(
    p_name text, p_concurrency integer, p_rate_starts integer, p_rate_period float8,
    p_paused boolean, p_set_concurrency boolean, p_set_rate boolean, p_set_paused boolean
) RETURNS SETOF {s}.queues
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.queues AS q (name, concurrency, rate_starts, rate_period, paused)
    VALUES (p_name,
            CASE WHEN p_set_concurrency THEN p_concurrency END,
            CASE WHEN p_set_rate THEN p_rate_starts END,
            CASE WHEN p_set_rate THEN p_rate_period END,
            COALESCE(CASE WHEN p_set_paused THEN p_paused END, false))
    ON CONFLICT (name) DO UPDATE SET
        concurrency = CASE WHEN p_set_concurrency THEN p_concurrency ELSE q.concurrency END,
        rate_starts = CASE WHEN p_set_rate THEN p_rate_starts ELSE q.rate_starts END,
        rate_period = CASE WHEN p_set_rate THEN p_rate_period ELSE q.rate_period END,
        paused = CASE WHEN p_set_paused THEN p_paused ELSE q.paused END,
        updated_at = now();
    IF p_set_rate AND p_rate_starts IS NULL THEN
        DELETE FROM {s}.rate_starts WHERE limiter = 'q:' || p_name;
    END IF;
    PERFORM pg_notify('{work}', p_name);
    RETURN QUERY SELECT * FROM {s}.queues WHERE name = p_name;
END;
$$;

-- A named rate set (p_starts NULL: removed). Returns whether a rate was there before.
CREATE FUNCTION {s}.set_rate_limit(p_key text, p_starts integer, p_period float8)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    existed boolean;
BEGIN
    existed := EXISTS (SELECT 1 FROM {s}.rate_limits WHERE key = p_key);
    IF p_starts IS NULL THEN
        DELETE FROM {s}.rate_limits WHERE key = p_key;
        DELETE FROM {s}.rate_starts WHERE limiter = 'k:' || p_key;
    ELSE
        INSERT INTO {s}.rate_limits AS r (key, starts, period)
        VALUES (p_key, p_starts, p_period)
        ON CONFLICT (key) DO UPDATE SET starts = p_starts, period = p_period, updated_at = now();
    END IF;
    -- Work held back by it may go now: wake every worker to look.
    PERFORM pg_notify('{work}', q.queue)
    FROM (SELECT DISTINCT e.queue FROM {s}.executions e
          WHERE e.status = 'pending' AND NOT e.held AND e.rate_key = p_key
          LIMIT 100) q;
    RETURN existed;
END;
$$;

-- Why a pending execution has not started, for `status`: NULL when nothing holds it back but
-- the wait for a worker.
CREATE FUNCTION {s}.waiting_for(e {s}.executions) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN e.status <> 'pending' THEN NULL
        WHEN e.held THEN format('concurrency key %s: its %s slot(s) are taken',
                                e.concurrency_key, COALESCE(e.concurrency_limit, 1))
        WHEN q.paused THEN format('queue %s is paused', e.queue)
        WHEN e.run_at > now() THEN format('due at %s', e.run_at)
        WHEN q.concurrency IS NOT NULL AND q.concurrency <= (
                 SELECT count(*) FROM {s}.executions r
                 WHERE r.queue = e.queue AND r.status = 'running')
            THEN format('queue %s is at its concurrency limit (%s)', e.queue, q.concurrency)
        WHEN q.rate_starts IS NOT NULL AND q.rate_starts <= (
                 SELECT count(*) FROM {s}.rate_starts s
                 WHERE s.limiter = 'q:' || e.queue
                   AND s.at > now() - make_interval(secs => q.rate_period))
            THEN format('queue %s is at its rate limit (%s per %s s)', e.queue, q.rate_starts,
                        q.rate_period)
        WHEN e.rate_key = ANY ({s}.spent_rate_keys(now()))
            THEN format('rate limit %s is reached', e.rate_key)
    END
    FROM (SELECT 1) AS one LEFT JOIN {s}.queues q ON q.name = e.queue
$$;
