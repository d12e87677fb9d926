-- A workflow step (an activity's outcome with the activation it resumes, written by advance())
-- for less of the server's time: measured with pg_stat_statements, much of it went to
-- statements that did nothing in the common case, to writing a row twice in one transaction,
-- and to what every statement on executions pays before it touches a row (a trigger's
-- condition compiled anew each time).
--
-- The functions keep their signatures and effects (0007's, 0013's); what changes is only what
-- runs to get them. admit() stays the one way into running.

-- insert_plans (0007): the steps' INSERT and the children's split in one statement, and the
-- trace context's UPDATE only when a child carries one (an untraced step paid for a join that
-- matched nothing).
CREATE OR REPLACE FUNCTION {s}.insert_plans(p_worker uuid, p_items jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    eager jsonb;
    others jsonb;
    traced boolean;
    admitted uuid[];
    announced bigint;
BEGIN
    -- (A data-modifying WITH runs to completion whether or not the query reads it.)
    WITH steps AS (
        INSERT INTO {s}.workflow_steps
            (workflow_id, seq, kind, name, status, execution_id, fire_at, result, delivered_in)
        SELECT (i.value->>'wf')::uuid, r.seq, r.kind, r.name, r.status, r.exec,
               CASE WHEN r.seconds IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.seconds) END,
               r.result::json, r.delivered
        FROM jsonb_array_elements(p_items) AS i,
             jsonb_to_recordset(i.value->'steps')
                 AS r(seq integer, kind text, name text, status text, exec uuid, seconds float8,
                      result text, delivered integer)
    )
    SELECT jsonb_agg(c.value) FILTER (WHERE (c.value->>'eager')::boolean),
           jsonb_agg(c.value) FILTER (WHERE NOT (c.value->>'eager')::boolean),
           bool_or((c.value->>'eager')::boolean AND c.value->>'trace_context' IS NOT NULL)
    INTO eager, others, traced
    FROM jsonb_array_elements(p_items) AS i, jsonb_array_elements(i.value->'children') AS c;
    IF eager IS NOT NULL THEN
        SELECT array_agg(a.id) INTO admitted FROM {s}.admit(p_worker, 'new', p_new => eager) a;
        IF traced THEN
            UPDATE {s}.executions x SET trace_context = (c.value->>'trace_context')::jsonb
            FROM jsonb_array_elements(eager) AS c
            WHERE c.value->>'trace_context' IS NOT NULL
              AND x.id = (c.value->>'id')::uuid
              AND x.id = ANY (COALESCE(admitted, '{}'));
        END IF;
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
             deadline, parent_id, parent_seq, concurrency_key, concurrency_limit, rate_key,
             trace_context)
        SELECT r.id, r.kind, r.name, r.queue, r.priority, r.args::json, r.max_retries,
               r.timeout_seconds, r.version,
               CASE WHEN r.workflow_timeout IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.workflow_timeout) END,
               r.parent_id, r.parent_seq, r.concurrency_key, r.concurrency_limit, r.rate_key,
               r.trace_context::jsonb
        FROM jsonb_to_recordset(others)
             AS r(id uuid, kind text, name text, queue text, priority integer, args text,
                  max_retries integer, timeout_seconds float8, version integer,
                  workflow_timeout float8, parent_id uuid, parent_seq integer,
                  concurrency_key text, concurrency_limit integer, rate_key text,
                  trace_context text)
        RETURNING queue, held
    )
    SELECT count(*) INTO announced
    FROM (SELECT DISTINCT queue FROM ins WHERE NOT held) q,
         LATERAL (SELECT pg_notify('{work}', q.queue)) n;
END;
$$;

-- The steps of a run of items of one workflow (see advance below), inserted at once, each with
-- the outcome a later item of the run gave it (as that item's UPDATE would have: same values,
-- and now() is the transaction's). The items are of one workflow. (PL/pgSQL, not SQL: its plan
-- is kept for the session.)
CREATE FUNCTION {s}.insert_resolved_steps(
    p_items jsonb[], p_seqs integer[], p_statuses text[], p_results text[], p_errors text[],
    p_delivered integer[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.workflow_steps
        (workflow_id, seq, kind, name, status, execution_id, fire_at, result, error,
         delivered_in, resolved_at)
    SELECT (i->>'wf')::uuid, s.seq, s.kind, s.name, COALESCE(v.status, s.status), s.exec,
           CASE WHEN s.seconds IS NULL THEN NULL ELSE now() + make_interval(secs => s.seconds) END,
           CASE WHEN v.seq IS NULL THEN s.result ELSE v.result END::json,
           v.error::json,
           CASE WHEN v.seq IS NULL THEN s.delivered ELSE v.delivered END,
           CASE WHEN v.seq IS NOT NULL THEN now() END
    FROM unnest(p_items) AS i
    CROSS JOIN LATERAL jsonb_to_recordset(i->'steps')
        AS s(seq integer, kind text, name text, status text, exec uuid, seconds float8,
             result text, delivered integer)
    LEFT JOIN unnest(p_seqs, p_statuses, p_results, p_errors, p_delivered)
        AS v(seq, status, result, error, delivered) ON v.seq = s.seq;
END;
$$;

-- advance (0007), for less per step. A run of items of one workflow (an activity's outcome,
-- the activation it resumes, whose activity is the next item's, and so on: what a worker
-- running activations ahead of their writes sends) costed each item a lock and read of the
-- workflow's row, the INSERT of its new steps, and the next item's UPDATE of one of them.
-- Now an item that continues such a run reads no row the one before left locked and
-- unchanged, and the run's steps are inserted once, as the run's items resolved them, before
-- anything else reads them (every other path writes them first). The children are admitted
-- item by item as before: each admission sees what the items before it wrote, as it did.
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
        was := locked;
        locked := NULL;
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
                -- The run goes on with the next item: this one's children are admitted now,
                -- its steps written with the run's. Children all to start here and none with
                -- a trace context (what a worker running ahead sends) go to admit() as they
                -- are, as insert_plans() would send them, and those it refuses are inserted
                -- pending as insert_plans() inserts them; any others through insert_plans().
                kids := r.it->'children';
                IF jsonb_array_length(kids) = jsonb_array_length(jsonb_path_query_array(
                       kids, '$[*] ? (@.eager == true && @.trace_context == null)')) THEN
                    IF jsonb_array_length(kids) > 0 THEN
                        SELECT array_agg(a.id) INTO admitted
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
    IF cardinality(run) > 0 THEN
        PERFORM {s}.insert_resolved_steps(run, res_seqs, res_statuses, res_results, res_errors,
                                          res_delivered);
    END IF;
    IF cardinality(deferred) > 0 THEN
        PERFORM {s}.insert_plans(p_worker, to_jsonb(deferred));
    END IF;
END;
$$;

-- The trigger on a status's change (0007), for less per statement. Its condition was read
-- anew (parsed and compiled) by every statement that updates a status, and the whole of it
-- cost about as much again as the UPDATE of a step's activity: now the condition only picks
-- the keyed rows, and the function tells the changes that matter from the others. A keyed
-- row pays for a call on every change of its status; every other row for a condition of two
-- tests. What each change does is as before.
CREATE OR REPLACE FUNCTION {s}.key_slot_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.concurrency_key IS NOT NULL AND NOT OLD.held
       AND OLD.status IN ('pending', 'running', 'waiting')
       AND NEW.status IN ('completed', 'failed', 'cancelled') THEN
        PERFORM {s}.free_key_slot_of(OLD.concurrency_key);
    ELSIF NEW.concurrency_key IS NOT NULL
          AND OLD.status IN ('completed', 'failed', 'cancelled')
          AND NEW.status IN ('pending', 'running', 'waiting') THEN
        UPDATE {s}.executions
        SET held = NOT {s}.take_slot(NEW.concurrency_key, NEW.concurrency_limit, NEW.status)
        WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER executions_key_slot_update ON {s}.executions;

CREATE TRIGGER executions_key_slot_update AFTER UPDATE OF status ON {s}.executions
FOR EACH ROW WHEN (OLD.concurrency_key IS NOT NULL OR NEW.concurrency_key IS NOT NULL)
EXECUTE FUNCTION {s}.key_slot_changed();
