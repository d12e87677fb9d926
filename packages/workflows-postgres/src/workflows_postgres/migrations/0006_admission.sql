-- One admission point, each transition written once, activations as JSON rows, and a leader.
--
-- * admit() is the only place an execution becomes `running`: a claim, the handoff of a job
--   to an idle worker (enqueue()), an activity started by the workflow's own worker (eager),
--   a waiting workflow resumed by the worker holding it in memory, and a workflow ended by an
--   activity's outcome (advance) all go through it. Flow control (concurrency and rate limits)
--   belongs here: a route that bypasses it cannot exist (tests/unit/test_admission.py).
-- * release() gives executions back to pending, for a worker or for the recovery of a dead
--   one.
-- * wake(), resolve_step() and consume_signals() (of 0002, now also behind send_signal) are the
--   transitions "a step of this workflow was resolved", "an execution ended: resolve its
--   parent's step" and "hand waiting signals to open waits", written once for every caller.
-- * An activation travels as one jsonb object (its steps and children as arrays of objects)
--   instead of forty parallel arrays. Values inside stay JSON text (strings), so jsonb's
--   normalisation never touches what the code wrote.
-- * leader / leader_terms: the lease of the worker that runs fleet-wide maintenance.
--
-- The array-taking functions of 0001-0005 are dropped: the code that called them refuses to
-- start against this schema version (workflows_postgres.store.check_schema).

DROP FUNCTION {s}.advance(
    uuid, uuid[], bigint[], bigint[], integer[], text[], text[], text[], uuid[], bigint[],
    integer[], text[], text[], text[], integer[], integer[], integer[], text[], integer[],
    integer[], text[], text[], text[], uuid[], double precision[], text[], integer[],
    integer[], uuid[], text[], text[], text[], integer[], text[], integer[],
    double precision[], integer[], double precision[], integer[], boolean[]);
DROP FUNCTION {s}.apply_activation(
    uuid, bigint, uuid, bigint, integer, integer[], integer[], text[], text[], text[], uuid[],
    double precision[], text[], integer[], uuid[], text[], text[], text[], integer[], text[],
    integer[], double precision[], integer[], double precision[], integer[], boolean[],
    text[], text, text, text);
DROP FUNCTION {s}.activate(
    uuid, uuid[], integer, bigint, bigint, integer, integer[], text[], text, text, text,
    integer[], integer[], text[], text[], text[], uuid[], double precision[], text[],
    integer[], integer[], uuid[], text[], text[], text[], integer[], text[], integer[],
    double precision[], integer[], double precision[], integer[], boolean[]);
DROP FUNCTION {s}.insert_commands(
    uuid, uuid[], integer[], integer[], integer[], text[], text[], text[], uuid[],
    double precision[], text[], integer[], integer[], uuid[], text[], text[], text[],
    integer[], text[], integer[], double precision[], integer[], double precision[],
    integer[], boolean[]);

-- The admission point: executions start on p_worker, with a new lease that fences off any
-- earlier claim. By p_from:
--   'claim'    runnable executions of p_queues, in claim order, locked, up to p_limit in all.
--              A workflow another live worker holds in memory is left to it for a moment
--              (sticky); one written by newer code than the worker knows (p_names/p_max) is
--              left to a newer worker; p_exclude: rows the calling statement itself updates.
--   'pending'  executions p_ids still pending;
--   'waiting'  workflows p_ids still waiting, resumed by the worker holding them in memory
--              (p_wakeups, parallel to p_ids, counts the step resolutions that come with them);
--   'new'      p_new, a jsonb array of objects named after executions' columns, inserted
--              already started (one write, where an insert and an update would make two).
-- Returns the rows admitted; an existing row no longer in p_from is left alone (the caller
-- deals with it as not admitted). Flow control (limits) belongs here: every route passes.
CREATE FUNCTION {s}.admit(
    p_worker uuid, p_from text, p_ids uuid[] DEFAULT NULL, p_wakeups bigint[] DEFAULT NULL,
    p_new jsonb DEFAULT NULL, p_queues text[] DEFAULT NULL, p_limit integer DEFAULT 0,
    p_names text[] DEFAULT '{}', p_max integer[] DEFAULT '{}', p_exclude uuid[] DEFAULT '{}'
) RETURNS SETOF {s}.executions
LANGUAGE plpgsql AS $$
BEGIN
    IF p_from = 'new' THEN
        RETURN QUERY
        INSERT INTO {s}.executions AS e
            (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
             version, deadline, parent_id, parent_seq,
             status, worker_id, lease, attempts, started_at)
        SELECT COALESCE(r.id, {s}.new_id()), r.kind, r.name, r.queue, r.priority, r.args::json,
               r.max_retries, r.timeout_seconds, now(), r.version, r.deadline, r.parent_id,
               r.parent_seq,
               'running', p_worker, 1, 1, now()
        FROM jsonb_to_recordset(p_new)
             AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                  max_retries integer, timeout_seconds float8, version integer,
                  deadline timestamptz, parent_id uuid, parent_seq integer)
        RETURNING e.*;
        RETURN;
    END IF;
    IF p_from = 'claim' THEN
        IF p_limit <= 0 THEN
            RETURN;
        END IF;
        -- The same transition as the one below, in the same statement as the choice of
        -- candidates: choosing them first into p_ids, a statement more, cost 6% of the jobs
        -- one worker process drains.
        RETURN QUERY
        UPDATE {s}.executions e
        SET status = 'running', worker_id = p_worker, lease = e.lease + 1,
            attempts = CASE WHEN e.kind = 'workflow' THEN 1 ELSE e.attempts + 1 END,
            started_at = COALESCE(e.started_at, now())
        -- An id array, not a join: the plan (generic, so not knowing how many) stays on the key.
        WHERE e.id = ANY (ARRAY(
            SELECT c.id
            FROM unnest(p_queues) AS q(queue)
            CROSS JOIN LATERAL (
                SELECT x.id, x.priority, x.run_at
                FROM {s}.executions x
                WHERE x.status = 'pending' AND x.queue = q.queue AND x.run_at <= now()
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
        RETURNING e.*;
        RETURN;
    END IF;
    IF cardinality(p_ids) IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE {s}.executions e
    SET status = 'running', worker_id = p_worker, lease = e.lease + 1,
        attempts = CASE WHEN e.kind = 'workflow' THEN 1 ELSE e.attempts + 1 END,
        started_at = COALESCE(e.started_at, now()),
        wakeups = e.wakeups + COALESCE(p_wakeups[array_position(p_ids, e.id)], 0),
        run_at = CASE WHEN p_from = 'waiting' THEN now() ELSE e.run_at END
    WHERE e.id = ANY (p_ids) AND e.status = p_from
    RETURNING e.*;
END;
$$;

-- A workflow's resolutions not yet handed to its code, as JSON: all a copy in memory needs.
-- Volatile on purpose: called after a statement resolved steps, it sees them.
CREATE FUNCTION {s}.undelivered(p_wf uuid) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT json_agg(json_build_object(
                       'seq', u.seq, 'kind', u.kind, 'name', u.name, 'status', u.status,
                       'result', u.result, 'error', u.error) ORDER BY u.seq)::text
            FROM {s}.workflow_steps u
            WHERE u.workflow_id = p_wf AND u.delivered_in IS NULL AND u.status <> 'scheduled');
END;
$$;

-- What a worker is handed for an execution admitted to it.
CREATE TYPE {s}.claimed AS (
    id text, kind text, name text, queue text, args text, attempts integer,
    max_retries integer, timeout_seconds double precision, lease bigint, version integer,
    wakeups bigint, parent_id text, parent_seq integer, deadline timestamptz,
    pickup_latency double precision, resolutions text
);

-- SQL, not STRICT, one expression: the planner inlines it where a statement selects
-- (claim_row(e)).*, so it costs nothing over writing the columns out.
CREATE FUNCTION {s}.claim_row(e {s}.executions) RETURNS {s}.claimed
LANGUAGE sql AS $$
    SELECT ROW(e.id::text, e.kind, e.name, e.queue, e.args::text, e.attempts, e.max_retries,
               e.timeout_seconds, e.lease, e.version, e.wakeups, e.parent_id::text,
               e.parent_seq, e.deadline,
               -- isfinite: a row written by hand (or by an old producer) with run_at
               -- -infinity must not fail every claim of its queue.
               CASE WHEN isfinite(e.run_at)
                    THEN extract(epoch FROM now() - e.run_at)::float8 END,
               CASE WHEN e.kind = 'workflow' THEN {s}.undelivered(e.id) END)::{s}.claimed
$$;

-- Steps of workflows p_ids were resolved (p_counts of each): count them, and make a waiting
-- workflow runnable, announcing its queue. Returns the number of notifications sent.
CREATE FUNCTION {s}.wake(p_ids uuid[], p_counts bigint[] DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    sent bigint := 0;
BEGIN
    IF cardinality(p_ids) IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN 0;
    END IF;
    WITH w AS (
        UPDATE {s}.executions e
        SET wakeups = e.wakeups + r.n,
            status = CASE WHEN e.status = 'waiting' THEN 'pending' ELSE e.status END,
            run_at = CASE WHEN e.status = 'waiting' THEN now() ELSE e.run_at END
        FROM unnest(p_ids, COALESCE(p_counts, array_fill(1::bigint, ARRAY[cardinality(p_ids)])))
             AS r(id, n)
        WHERE e.id = r.id
        RETURNING e.queue, e.status
    )
    SELECT count(*) INTO sent
    FROM (SELECT DISTINCT queue FROM w WHERE status = 'pending') q,
         LATERAL (SELECT pg_notify('{work}', q.queue)) n;
    RETURN sent;
END;
$$;

-- An execution ended (p_status, with its result or error as JSON text): resolve the step of
-- its parent workflow that waits for it, and wake the parent. False if no step was open.
CREATE FUNCTION {s}.resolve_step(
    p_parent uuid, p_seq integer, p_status text, p_result text, p_error text
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.workflow_steps
    SET status = p_status, result = p_result::json, error = p_error::json, resolved_at = now()
    WHERE workflow_id = p_parent AND seq = p_seq AND status = 'scheduled';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM {s}.wake(ARRAY[p_parent]);
    RETURN true;
END;
$$;

-- The steps and executions of activations: p_items is a jsonb array of objects with the
-- workflow's id ("wf"), its new "steps" and the "children" it starts (objects named after
-- executions' columns, plus "eager"). An eager child (an activity its worker runs itself) is
-- admitted to p_worker as it is inserted; the queues of the others are announced.
CREATE FUNCTION {s}.insert_plans(p_worker uuid, p_items jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    eager jsonb;
    others jsonb;
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
        PERFORM FROM {s}.admit(p_worker, 'new', p_new => eager);
    END IF;
    IF others IS NULL THEN
        RETURN;
    END IF;
    WITH ins AS (
        INSERT INTO {s}.executions
            (id, kind, name, queue, priority, args, max_retries, timeout_seconds, version,
             deadline, parent_id, parent_seq)
        SELECT r.id, r.kind, r.name, r.queue, r.priority, r.args::json, r.max_retries,
               r.timeout_seconds, r.version,
               CASE WHEN r.workflow_timeout IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.workflow_timeout) END,
               r.parent_id, r.parent_seq
        FROM jsonb_to_recordset(others)
             AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                  max_retries integer, timeout_seconds float8, version integer,
                  workflow_timeout float8, parent_id uuid, parent_seq integer)
        RETURNING queue
    )
    SELECT count(*) INTO announced
    FROM (SELECT DISTINCT queue FROM ins) q, LATERAL (SELECT pg_notify('{work}', q.queue)) n;
END;
$$;

-- One activation of a workflow claimed under p_lease. p_item (see advance): "wf", "wakeups",
-- "number", "delivered", "signals", "outcome" (blocked | completed | failed), "result",
-- "error", "steps", "children". Returns the workflow's new status, or NULL when the claim was
-- lost.
CREATE FUNCTION {s}.activate(p_worker uuid, p_item jsonb, p_lease bigint) RETURNS text
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
    PERFORM {s}.insert_plans(p_worker, jsonb_build_array(p_item));
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

-- One activation in one round trip (the claimed workflow's lease in p_item's "lease").
CREATE FUNCTION {s}.apply_activation(p_worker uuid, p_item jsonb) RETURNS text
LANGUAGE sql AS $$
    SELECT {s}.activate(p_worker, p_item, (p_item->>'lease')::bigint)
$$;

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
CREATE FUNCTION {s}.advance(p_worker uuid, p_items jsonb)
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
            -- as any other.
            SELECT a.lease INTO cur_lease FROM {s}.admit(p_worker, 'waiting', ARRAY[r.wf]) a;
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

-- One job or workflow enqueued. A job to run now, outside a caller's transaction
-- (p_handoff), goes straight to an idle worker that offered itself for its queue (see 0003):
-- admitted to it and announced on {start} as "<worker id> <execution id>". The notification
-- is only a hint (the worker reads the claim back from the table). Every other enqueue
-- announces its queue on {work}. No row on an idempotency key already taken.
CREATE FUNCTION {s}.enqueue(
    p_kind text, p_name text, p_queue text, p_priority integer, p_args text,
    p_retries integer, p_timeout float8, p_run_at timestamptz, p_delay float8,
    p_key text, p_version integer, p_wf_timeout float8, p_handoff boolean
) RETURNS TABLE (id uuid, handed_to uuid)
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid;
    due timestamptz;
    taker uuid;
BEGIN
    IF p_handoff AND p_kind = 'job' AND p_run_at IS NULL AND COALESCE(p_delay, 0) <= 0
       AND p_key IS NULL THEN
        DELETE FROM {s}.worker_offers o
        WHERE o.worker_id = (SELECT f.worker_id FROM {s}.worker_offers f
                             WHERE f.queues @> ARRAY[p_queue] AND f.expires_at > now()
                             LIMIT 1 FOR UPDATE SKIP LOCKED)
          -- Free: the worker's listening session is gone, and the worker with it.
          AND NOT pg_try_advisory_xact_lock_shared(o.lock_key)
        RETURNING o.worker_id INTO taker;
        IF taker IS NOT NULL THEN
            SELECT a.id, a.worker_id INTO new_id, handed_to
            FROM {s}.admit(taker, 'new', p_new => jsonb_build_array(jsonb_build_object(
                'kind', p_kind, 'name', p_name, 'queue', p_queue, 'priority', p_priority,
                'args', p_args, 'max_retries', p_retries, 'timeout_seconds', p_timeout,
                'version', p_version))) a;
            id := new_id;
            PERFORM pg_notify('{start}', handed_to::text || ' ' || new_id::text);
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    INSERT INTO {s}.executions AS e
        (id, kind, name, queue, priority, args, max_retries, timeout_seconds, run_at,
         idempotency_key, version, deadline)
    VALUES ({s}.new_id(), p_kind, p_name, p_queue, p_priority, p_args::json, p_retries,
            p_timeout,
            COALESCE(p_run_at, now() + make_interval(secs => COALESCE(p_delay, 0))),
            p_key, p_version, now() + make_interval(secs => p_wf_timeout))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING e.id, e.run_at INTO new_id, due;
    IF new_id IS NULL THEN
        RETURN;
    END IF;
    id := new_id;
    IF due <= now() THEN
        PERFORM pg_notify('{work}', p_queue);
    END IF;
    RETURN NEXT;
END;
$$;

-- Back to pending without counting the attempt: executions p_ids still running under the
-- claims p_leases (parallel to p_ids) and, unless p_worker is NULL (recovery, whose worker is
-- dead), on p_worker; runnable again p_delay seconds from now, their queues announced. Only a
-- few times in a row (releases, 0005): the third in a row counts the attempt, so an execution
-- that keeps coming back (a handoff given back, a shutdown past its grace, a lost reply, its
-- worker lost) still uses up its retries. Returns the ids released.
CREATE FUNCTION {s}.release(
    p_ids uuid[], p_leases bigint[], p_worker uuid, p_delay float8 DEFAULT 0
) RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH r AS (
        UPDATE {s}.executions e
        SET status = 'pending', worker_id = NULL,
            run_at = now() + make_interval(secs => p_delay),
            attempts = CASE WHEN e.kind = 'workflow' OR e.releases >= 2 THEN e.attempts
                            ELSE greatest(e.attempts - 1, 0) END,
            releases = e.releases + 1
        WHERE e.id = ANY (p_ids) AND e.lease = p_leases[array_position(p_ids, e.id)]
          AND e.status = 'running' AND (p_worker IS NULL OR e.worker_id = p_worker)
        RETURNING e.id, e.queue, e.run_at
    ), announced AS (
        SELECT count(*) AS n
        FROM (SELECT DISTINCT r.queue FROM r WHERE r.run_at <= now()) q,
             LATERAL (SELECT pg_notify('{work}', q.queue)) s
    )
    -- Joined, so that the announcements are made (a CTE nobody reads is not run).
    SELECT r.id FROM r CROSS JOIN announced;
END;
$$;

-- The worker that runs fleet-wide maintenance (recovering dead peers, timers, deadlines) holds
-- this lease; every acquisition is a new term, kept in leader_terms with how long it held.
CREATE TABLE {s}.leader (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    term       bigint NOT NULL,
    worker_id  uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE {s}.leader_terms (
    term       bigint PRIMARY KEY,
    worker_id  uuid NOT NULL,
    began_at   timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Become or stay the leader for p_ttl seconds. A lease is taken over only once it has
-- expired, under the row's lock, so two terms never overlap.
CREATE FUNCTION {s}.lead(p_worker uuid, p_ttl float8) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    cur record;
    until timestamptz := now() + make_interval(secs => p_ttl);
BEGIN
    SELECT * INTO cur FROM {s}.leader WHERE singleton FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {s}.leader (term, worker_id, expires_at)
        VALUES (COALESCE((SELECT max(term) FROM {s}.leader_terms), 0) + 1, p_worker, until)
        ON CONFLICT (singleton) DO NOTHING
        RETURNING * INTO cur;
        IF NOT FOUND THEN
            RETURN false;  -- another worker took it just now
        END IF;
        INSERT INTO {s}.leader_terms VALUES (cur.term, p_worker, now(), now(), until);
        RETURN true;
    END IF;
    IF cur.expires_at > now() AND cur.worker_id <> p_worker THEN
        RETURN false;
    END IF;
    IF cur.expires_at > now() THEN
        UPDATE {s}.leader SET expires_at = until WHERE singleton;
        UPDATE {s}.leader_terms SET renewed_at = now(), expires_at = until
        WHERE term = cur.term;
        RETURN true;
    END IF;
    UPDATE {s}.leader SET term = cur.term + 1, worker_id = p_worker, expires_at = until
    WHERE singleton;
    INSERT INTO {s}.leader_terms VALUES (cur.term + 1, p_worker, now(), now(), until);
    RETURN true;
END;
$$;

-- A leader stopping cleanly ends its term now, so the next one need not wait out the lease.
CREATE FUNCTION {s}.resign(p_worker uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE {s}.leader_terms t SET expires_at = now()
    FROM {s}.leader l
    WHERE l.worker_id = p_worker AND l.expires_at > now() AND t.term = l.term;
    UPDATE {s}.leader SET expires_at = now() WHERE worker_id = p_worker AND expires_at > now();
$$;
