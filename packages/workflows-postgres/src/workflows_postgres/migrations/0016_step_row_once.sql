-- A step of a chained run (0015) writes its activity's row once, and a run admits its
-- activities in one admission, its first step included. The worker runs a step's activity ahead of the write that
-- admits it, so in a run the item that admits an activity is followed, in the same batch, by
-- the item that ends it: the row was inserted running, then updated to its end (a second row
-- version, its index entries and a dead tuple per step), and each item called admit() for its
-- one activity. Now admit() inserts a row as it ended when told so; advance() tells it so for
-- the child the next item ends, and, where nothing limits their queues, admits the children of
-- a whole run at once (the worker lists them on the run's first item: a hint, each checked
-- against its item before it is kept). What the rows hold after the batch is as before;
-- admission is unchanged (a refused child is inserted pending and the next item finds it
-- stale; children admitted for items the run never reached are deleted in the same write).
--
-- Signatures and every other effect are 0006's, 0007's (as 0010 left admit()) and 0015's.

-- admit (0007, as 0010 left it): a 'new' row may carry how it ended (done: completed or
-- failed, with its result and error): it is then inserted so, with finished_at, and no worker
-- holds it. Everything else, including its start counted by its rates, is as for a row
-- inserted running.
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
            attempts = CASE WHEN e.kind = 'workflow' THEN greatest(e.attempts, 1)
                            ELSE e.attempts + 1 END,
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
             rate_key, status, worker_id, lease, attempts, started_at, result, error,
             finished_at)
        SELECT COALESCE(r.id, {s}.new_id()), r.kind, r.name, r.queue, r.priority,
               r.args::json, r.max_retries, r.timeout_seconds, now(), r.version, r.deadline,
               r.parent_id, r.parent_seq, r.concurrency_key, r.concurrency_limit, r.rate_key,
               -- Started as it was enqueued.
               COALESCE(r.done, 'running'), CASE WHEN r.done IS NULL THEN p_worker END, 1, 1,
               now(), r.result::json, r.error::jsonb,
               CASE WHEN r.done IS NOT NULL THEN now() END
        FROM jsonb_to_recordset(p_new)
             AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                  max_retries integer, timeout_seconds float8, version integer,
                  deadline timestamptz, parent_id uuid, parent_seq integer,
                  concurrency_key text, concurrency_limit integer, rate_key text,
                  done text, result text, error text)
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
            attempts = CASE WHEN e.kind = 'workflow' THEN greatest(e.attempts, 1)
                            ELSE e.attempts + 1 END,
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
                 rate_key, status, worker_id, lease, attempts, started_at, result, error,
                 finished_at)
            SELECT COALESCE(r.id, {s}.new_id()), r.kind, r.name, r.queue, r.priority,
                   r.args::json, r.max_retries, r.timeout_seconds, now(), r.version, r.deadline,
                   r.parent_id, r.parent_seq, r.concurrency_key, r.concurrency_limit, r.rate_key,
                   COALESCE(r.done, 'running'), CASE WHEN r.done IS NULL THEN p_worker END, 1, 1,
                   v_at, r.result::json, r.error::jsonb,
                   CASE WHEN r.done IS NOT NULL THEN now() END
            FROM jsonb_to_recordset(p_new)
                 AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                      max_retries integer, timeout_seconds float8, version integer,
                      deadline timestamptz, parent_id uuid, parent_seq integer,
                      concurrency_key text, concurrency_limit integer, rate_key text,
                      done text, result text, error text)
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
            attempts = CASE WHEN e.kind = 'workflow' THEN greatest(e.attempts, 1)
                            ELSE e.attempts + 1 END,
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

-- advance (0015): a chained item's children, and a workflow's first activation's one child,
-- go to admit() with the outcome the next item gives one of them, when it does (an activity
-- run ahead is that item's, at lease 1); the next item then updates no row for it. A run may
-- start at an activation of a claimed workflow (its first, most often): applied without its
-- steps and children, which go with the run's, so its step too is written once. A run of
-- such items (each with one child, eager and untraced) on queues nothing limits admits its
-- children in one call, on its first item: each item then takes its own, found equal to the
-- one derived from the item and the next; from an item that is not (or where the run breaks
-- off), the children admitted for the rest are deleted and the items go one by one. An
-- activation that ends the workflow on the step its item resolved does not update that step
-- again (it was written with the activation's number).
CREATE OR REPLACE FUNCTION {s}.advance(p_worker uuid, p_items jsonb)
RETURNS TABLE (item integer, outcome text, lease bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    wf record;
    found_wf boolean;
    fast boolean;
    chained boolean;
    kids jsonb;
    admitted uuid[];
    -- Of the children just admitted, the one the next item ends, inserted ended.
    ended uuid[] := '{}';
    act_ended boolean;
    -- The item goes on with a run (admits its children, adds its steps to the run's).
    joined boolean;
    -- The children of a run admitted at once (see below): those whose items are still to
    -- come, in order, and those admit() took.
    pre uuid[] := '{}';
    pre_kids jsonb[];
    pre_in uuid[];
    it jsonb;
    cur_lease bigint;
    -- The workflow whose row wf holds, locked and unchanged since it was read (the previous
    -- item continued its run), and the run's items whose steps are not written yet, the last
    -- one apart, with what later items of the run resolved of them.
    locked uuid;
    was uuid;
    run jsonb[] := '{}';
    last jsonb;
    res_seqs integer[] := '{}';
    res_statuses text[] := '{}';
    res_results text[] := '{}';
    res_errors text[] := '{}';
    res_delivered integer[] := '{}';
    -- An array of items, appended in place (a jsonb array would be copied on every append).
    deferred jsonb[] := '{}';
BEGIN
    -- Each item's fields typed once, with the next item's beside it. kid: the item's one
    -- child (eager, untraced) as the next item ends it, when the item may start or continue a
    -- run (its activation waits on that child, with no signal, and the next item, of the same
    -- workflow, ends it). run_kids: what the worker sends on the first of such
    -- items in a row, as the kids of them all (a hint: each is checked against kid below).
    FOR r IN
        SELECT y.*,
               CASE WHEN y.wf_outcome = 'blocked' AND y.signals = 0
                         AND y.next_wf = y.it->>'wf' AND y.next_act_lease = 1
                         AND jsonb_array_length(y.it->'children') = 1
                         AND (y.it->'children'->0->>'id')::uuid = y.next_act::uuid
                         AND (y.it->'children'->0->>'eager')::boolean
                         AND y.it->'children'->0->>'trace_context' IS NULL
                    THEN (y.it->'children'->0) || jsonb_build_object(
                        'done', y.next_status, 'result', y.next_result, 'error', y.next_error)
               END AS kid
        FROM (
            SELECT x.ord::integer AS i, x.value AS it, (x.value->>'wf')::uuid AS wf,
                   lead(x.value->>'wf') OVER w AS next_wf,
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
                   jsonb_array_length(x.value->'signals') AS signals,
                   x.value->'run_kids' AS run_kids,
                   lead(x.value->>'act') OVER w AS next_act,
                   lead((x.value->>'act_lease')::bigint) OVER w AS next_act_lease,
                   lead(x.value->>'act_status') OVER w AS next_status,
                   lead(x.value->>'act_result') OVER w AS next_result,
                   lead(x.value->>'act_error') OVER w AS next_error
            FROM jsonb_array_elements(p_items) WITH ORDINALITY AS x(value, ord)
            WINDOW w AS (ORDER BY x.ord)
        ) y
        ORDER BY y.i
    LOOP
        IF cardinality(pre) > 0 AND (r.kid IS NULL OR r.kid <> pre_kids[1]) THEN
            -- The run broke off before this item, or its child is not the one the worker
            -- said: the children admitted for the items left go (the item by item way never
            -- admits them), and this item goes the item by item way.
            DELETE FROM {s}.executions WHERE id = ANY (pre) AND id = ANY (pre_in);
            pre := '{}';
        END IF;
        item := r.i;
        lease := NULL;
        cur_lease := r.wf_lease;
        was := locked;
        locked := NULL;
        act_ended := COALESCE(r.act = ANY (ended), false);
        ended := '{}';
        joined := false;
        IF cardinality(run) > 0 AND (r.act IS NULL OR was IS DISTINCT FROM r.wf) THEN
            PERFORM {s}.insert_resolved_steps(run, res_seqs, res_statuses, res_results,
                                              res_errors, res_delivered);
            run := '{}';
            res_seqs := '{}'; res_statuses := '{}'; res_results := '{}'; res_errors := '{}';
            res_delivered := '{}';
        END IF;
        IF r.act IS NOT NULL THEN
            IF was IS DISTINCT FROM r.wf THEN
                SELECT e.status, e.lease, e.wakeups, e.sticky_worker_id, e.cancel_requested,
                       e.queue
                INTO wf
                FROM {s}.executions e WHERE e.id = r.wf
                FOR UPDATE;
                found_wf := FOUND;
            END IF;
            IF NOT act_ended THEN
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
            END IF;
            fast := found_wf AND wf.status = 'waiting' AND wf.lease = cur_lease
                    AND wf.wakeups = r.wakeups AND wf.sticky_worker_id = p_worker
                    AND NOT wf.cancel_requested;
            chained := fast AND r.wf_outcome = 'blocked' AND r.signals = 0
                       AND r.next_wf = r.it->>'wf';
            IF cardinality(run) > 0
               AND last->'steps' @> jsonb_build_array(
                       jsonb_build_object('seq', r.seq, 'status', 'scheduled')) THEN
                -- A step the run's last item added, not written yet: resolved where it is.
                res_seqs := res_seqs || r.seq;
                res_statuses := res_statuses || r.act_status;
                res_results := res_results || r.act_result;
                res_errors := res_errors || r.act_error;
                res_delivered := res_delivered || CASE WHEN fast THEN r.number END;
            ELSE
                IF cardinality(run) > 0 THEN
                    PERFORM {s}.insert_resolved_steps(run, res_seqs, res_statuses, res_results,
                                                      res_errors, res_delivered);
                    run := '{}';
                    res_seqs := '{}'; res_statuses := '{}'; res_results := '{}';
                    res_errors := '{}'; res_delivered := '{}';
                END IF;
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
            END IF;
            IF chained THEN
                joined := true;
            ELSE
                IF cardinality(run) > 0 THEN
                    -- The run ends here: its steps are written before anything reads them.
                    PERFORM {s}.insert_resolved_steps(run, res_seqs, res_statuses, res_results,
                                                      res_errors, res_delivered);
                    run := '{}';
                    res_seqs := '{}'; res_statuses := '{}'; res_results := '{}'; res_errors := '{}';
                    res_delivered := '{}';
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
                    -- are inserted with those of the batch's other such items, at the end.
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
        ELSIF r.kid IS NOT NULL THEN
            -- An activation of a claimed workflow that starts a run: applied without its
            -- steps and children, which go with the run's (below) as a chained item's do.
            outcome := {s}.activate(p_worker, r.it || '{"steps": [], "children": []}',
                                    cur_lease);
            IF outcome = 'waiting' THEN
                -- Locked by activate(), as it left it.
                SELECT e.status, e.lease, e.wakeups, e.sticky_worker_id, e.cancel_requested,
                       e.queue
                INTO wf
                FROM {s}.executions e WHERE e.id = r.wf;
                found_wf := FOUND;
                joined := true;
            ELSE
                IF outcome = 'pending' THEN
                    -- Woken meanwhile: its plans inserted as activate() would have.
                    PERFORM {s}.insert_plans(p_worker, jsonb_build_array(
                        jsonb_set(r.it, '{children,0}', r.kid)));
                    ended := ARRAY(SELECT e.id FROM {s}.executions e
                                   WHERE e.id = r.next_act::uuid
                                     AND e.status IN ('completed', 'failed'));
                END IF;
                outcome := coalesce(outcome, 'stale');
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        IF joined THEN
            -- The run goes on with the next item: this one's children are admitted now,
            -- its steps written with the run's. Children all to start here and none with
            -- a trace context (what a worker running ahead sends) go to admit() as they
            -- are, as insert_plans() would send them, and those it refuses are inserted
            -- pending as insert_plans() inserts them; any others through insert_plans().
            kids := r.it->'children';
            -- (Tests apart, each a simple expression: a query costs every item.)
            IF r.run_kids IS NOT NULL AND cardinality(pre) = 0 AND r.kid IS NOT NULL THEN
                IF jsonb_typeof(r.run_kids) = 'array' AND jsonb_array_length(r.run_kids) > 1
                   AND r.run_kids->0 = r.kid THEN
                    -- The run's children at once, each as the next item ends it: one
                    -- admission for the run, not one per item. Only where nothing limits
                    -- their queues (admit() admits them all, as it would one by one; the
                    -- test is flow_free()'s, written out: a call of it is planned anew).
                    -- Each is taken by its item below once found to be that item's kid;
                    -- the rest are deleted when the run breaks off (above, and at the end).
                    SELECT array_agg((c.value->>'id')::uuid ORDER BY c.ord),
                           array_agg(c.value ORDER BY c.ord)
                    INTO pre, pre_kids
                    FROM jsonb_array_elements(r.run_kids) WITH ORDINALITY AS c(value, ord)
                    WHERE NOT EXISTS (
                              SELECT 1 FROM {s}.queues q
                              WHERE q.name IN (SELECT k->>'queue'
                                               FROM jsonb_array_elements(r.run_kids) AS k)
                                AND (q.paused OR q.concurrency IS NOT NULL
                                     OR q.rate_starts IS NOT NULL))
                      AND NOT EXISTS (SELECT 1 FROM {s}.rate_limits);
                    IF pre IS NULL THEN
                        pre := '{}';
                    ELSE
                        SELECT COALESCE(array_agg(a.id), '{}') INTO pre_in
                        FROM {s}.admit(p_worker, 'new', p_new => r.run_kids) a;
                    END IF;
                END IF;
            END IF;
            IF cardinality(pre) > 0 THEN
                -- This item's kid is pre_kids[1] (checked above).
                IF pre[1] = ANY (pre_in) THEN
                    ended := ARRAY[pre[1]];
                    pre := pre[2:];
                    pre_kids := pre_kids[2:];
                ELSE
                    -- Refused (a limit set meanwhile): pending, as below; the run's
                    -- later children go, and the next item finds this one stale.
                    PERFORM {s}.insert_plans(p_worker, jsonb_build_array(jsonb_build_object(
                        'children', jsonb_build_array(kids->0 || '{"eager": false}'))));
                    DELETE FROM {s}.executions WHERE id = ANY (pre) AND id = ANY (pre_in);
                    pre := '{}';
                END IF;
            ELSIF jsonb_array_length(kids) = jsonb_array_length(jsonb_path_query_array(
                   kids, '$[*] ? (@.eager == true && @.trace_context == null)')) THEN
                IF jsonb_array_length(kids) > 0 THEN
                    IF r.next_act_lease = 1 THEN
                        -- The next item ends one of them (the worker ran it ahead of
                        -- this write): admitted, it is inserted as it ended, with what
                        -- that item's UPDATE would set (kid, for one child).
                        IF r.kid IS NOT NULL THEN
                            kids := jsonb_build_array(r.kid);
                        ELSIF jsonb_array_length(kids) > 1 THEN
                            SELECT jsonb_agg(CASE WHEN (c.value->>'id')::uuid
                                                       = r.next_act::uuid
                                                  THEN c.value || jsonb_build_object(
                                                      'done', r.next_status,
                                                      'result', r.next_result,
                                                      'error', r.next_error)
                                                  ELSE c.value END ORDER BY c.ord)
                            INTO kids
                            FROM jsonb_array_elements(kids) WITH ORDINALITY AS c(value, ord);
                        END IF;
                    END IF;
                    SELECT array_agg(a.id),
                           COALESCE(array_agg(a.id) FILTER (WHERE a.status <> 'running'),
                                    '{}')
                    INTO admitted, ended
                    FROM {s}.admit(p_worker, 'new', p_new => kids) a;
                    IF COALESCE(cardinality(admitted), 0) < jsonb_array_length(kids) THEN
                        PERFORM {s}.insert_plans(p_worker, jsonb_build_array(
                            jsonb_build_object('children', (
                                SELECT jsonb_agg(c.value || '{"eager": false}')
                                FROM jsonb_array_elements(kids) AS c
                                WHERE NOT ((c.value->>'id')::uuid
                                           = ANY (COALESCE(admitted, '{}')))))));
                    END IF;
                END IF;
            ELSE
                PERFORM {s}.insert_plans(p_worker, jsonb_build_array(r.it - 'steps'));
            END IF;
            run := run || r.it;
            last := r.it;
            locked := r.wf;
            outcome := 'waiting';
            RETURN NEXT;
            CONTINUE;
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
        IF r.act IS NULL AND r.wf_outcome = 'blocked' AND r.next_act_lease = 1
           AND r.next_wf = r.it->>'wf' AND jsonb_array_length(r.it->'children') = 1
           AND (r.it->'children'->0->>'id')::uuid = r.next_act::uuid THEN
            -- A workflow's first activation, its one activity run ahead and ended by the next
            -- item: inserted as it ended too, when admitted (insert_plans() passes it on).
            it := jsonb_set(r.it, '{children,0}', (r.it->'children'->0) || jsonb_build_object(
                'done', r.next_status, 'result', r.next_result, 'error', r.next_error));
            outcome := coalesce({s}.activate(p_worker, it, cur_lease), 'stale');
            ended := ARRAY(SELECT e.id FROM {s}.executions e
                           WHERE e.id = r.next_act::uuid AND e.status IN ('completed', 'failed'));
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF r.act IS NOT NULL AND r.it->'delivered' = jsonb_build_array(r.seq) THEN
            -- The step this item resolved is the one its activation was given: written with
            -- that activation's number above (the item is fast), not to be updated again.
            outcome := coalesce({s}.activate(p_worker, r.it || '{"delivered": []}', cur_lease),
                                'stale');
            RETURN NEXT;
            CONTINUE;
        END IF;
        outcome := coalesce({s}.activate(p_worker, r.it, cur_lease), 'stale');
        RETURN NEXT;
    END LOOP;
    IF cardinality(pre) > 0 THEN
        DELETE FROM {s}.executions WHERE id = ANY (pre) AND id = ANY (pre_in);
    END IF;
    IF cardinality(run) > 0 THEN
        PERFORM {s}.insert_resolved_steps(run, res_seqs, res_statuses, res_results, res_errors,
                                          res_delivered);
    END IF;
    IF cardinality(deferred) > 0 THEN
        PERFORM {s}.insert_plans(p_worker, to_jsonb(deferred));
    END IF;
END;
$$;

-- activate (0006): an activation with no step or child to insert (a workflow's last, most
-- often) no longer calls insert_plans(), whose statements cost it a third of its time for
-- nothing.
CREATE OR REPLACE FUNCTION {s}.activate(p_worker uuid, p_item jsonb, p_lease bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p_wf uuid := (p_item->>'wf')::uuid;
    p_outcome text := p_item->>'outcome';
    wf record;
    woke boolean;
    final text;
BEGIN
    SELECT e.wakeups, e.cancel_requested, e.queue, e.parent_id, e.parent_seq INTO wf
    FROM {s}.executions e
    WHERE e.id = p_wf AND e.lease = p_lease AND e.status = 'running'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF wf.cancel_requested THEN
        RETURN 'cancelled';
    END IF;
    IF jsonb_array_length(p_item->'delivered') > 0 THEN
        UPDATE {s}.workflow_steps SET delivered_in = (p_item->>'number')::integer
        WHERE workflow_id = p_wf
          AND seq IN (SELECT jsonb_array_elements_text(p_item->'delivered')::integer);
    END IF;
    IF jsonb_array_length(p_item->'steps') > 0 OR jsonb_array_length(p_item->'children') > 0 THEN
        PERFORM {s}.insert_plans(p_worker, jsonb_build_array(p_item));
    END IF;
    woke := jsonb_array_length(p_item->'signals') > 0 AND {s}.consume_signals(
        p_wf, ARRAY(SELECT jsonb_array_elements_text(p_item->'signals')));
    IF p_outcome = 'blocked' THEN
        UPDATE {s}.executions
        SET status = CASE WHEN wakeups = (p_item->>'wakeups')::bigint AND NOT woke
                          THEN 'waiting' ELSE 'pending' END,
            run_at = now(), worker_id = NULL, sticky_worker_id = p_worker
        WHERE id = p_wf
        RETURNING status INTO final;
        IF final = 'pending' THEN
            PERFORM pg_notify('{work}', wf.queue);
        END IF;
        RETURN final;
    END IF;
    UPDATE {s}.executions
    SET status = p_outcome, result = (p_item->>'result')::json,
        error = (p_item->>'error')::jsonb, finished_at = now(), worker_id = NULL
    WHERE id = p_wf;
    PERFORM pg_notify('{done}', p_wf::text);
    IF wf.parent_id IS NOT NULL THEN
        PERFORM {s}.resolve_step(
            wf.parent_id, wf.parent_seq, p_outcome, p_item->>'result', p_item->>'error');
    END IF;
    RETURN p_outcome;
END;
$$;
