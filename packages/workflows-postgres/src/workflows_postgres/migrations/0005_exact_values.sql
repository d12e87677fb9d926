-- Arguments, results and signal payloads keep the text the worker or producer wrote: `json`
-- stores it as given, where jsonb reorders keys, prints 1e16 as 10000000000000000 and -0.0 as
-- 0 (step history has kept exact text since 0002). The functions below are those of 0002 with
-- their casts to json; jsonb stays for errors, which only this library writes.
--
-- `releases` counts the times in a row an execution went back to pending without its attempt
-- counted (a worker's shutdown, a handoff given back, a lost reply): past a few, the attempt
-- counts, so nothing re-runs forever uncounted. An outcome recorded resets it.
ALTER TABLE {s}.executions
    ALTER COLUMN args TYPE json USING args::json,
    ALTER COLUMN result TYPE json USING result::json,
    ADD COLUMN releases integer NOT NULL DEFAULT 0;
ALTER TABLE {s}.workflow_signals
    ALTER COLUMN payload TYPE json USING payload::json;

CREATE OR REPLACE FUNCTION {s}.insert_commands(
    p_worker uuid, p_wfs uuid[], p_items integer[],
    s_item integer[], s_seq integer[], s_kind text[], s_name text[], s_status text[],
    s_exec uuid[], s_seconds float8[], s_result text[], s_delivered integer[],
    c_item integer[], c_id uuid[], c_kind text[], c_name text[], c_queue text[],
    c_priority integer[], c_args text[], c_retries integer[], c_timeout float8[],
    c_version integer[], c_wf_timeout float8[], c_seq integer[], c_eager boolean[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(s_seq) > 0 THEN
        INSERT INTO {s}.workflow_steps
            (workflow_id, seq, kind, name, status, execution_id, fire_at, result, delivered_in)
        SELECT p_wfs[r.item], r.seq, r.kind, r.name, r.status, r.exec,
               CASE WHEN r.seconds IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.seconds) END,
               r.result::json, r.delivered
        FROM unnest(s_item, s_seq, s_kind, s_name, s_status, s_exec, s_seconds, s_result,
                    s_delivered)
             AS r(item, seq, kind, name, status, exec, seconds, result, delivered)
        WHERE r.item = ANY (p_items);
    END IF;
    IF cardinality(c_id) > 0 THEN
        INSERT INTO {s}.executions
            (id, kind, name, queue, priority, args, max_retries, timeout_seconds, version,
             deadline, parent_id, parent_seq, status, worker_id, lease, attempts, started_at)
        SELECT r.id, r.kind, r.name, r.queue, r.priority, r.args::json, r.retries, r.timeout,
               r.version,
               CASE WHEN r.wf_timeout IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.wf_timeout) END,
               p_wfs[r.item], r.seq,
               CASE WHEN r.eager THEN 'running' ELSE 'pending' END,
               CASE WHEN r.eager THEN p_worker END,
               CASE WHEN r.eager THEN 1 ELSE 0 END,
               CASE WHEN r.eager THEN 1 ELSE 0 END,
               CASE WHEN r.eager THEN now() END
        FROM unnest(c_item, c_id, c_kind, c_name, c_queue, c_priority, c_args, c_retries,
                    c_timeout, c_version, c_wf_timeout, c_seq, c_eager)
             AS r(item, id, kind, name, queue, priority, args, retries, timeout, version,
                  wf_timeout, seq, eager)
        WHERE r.item = ANY (p_items);
        PERFORM pg_notify('{work}', q.queue)
        FROM (SELECT DISTINCT r.queue
              FROM unnest(c_item, c_queue, c_eager) AS r(item, queue, eager)
              WHERE NOT r.eager AND r.item = ANY (p_items)) q;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION {s}.activate(
    p_worker uuid, p_wfs uuid[], p_item integer, p_lease bigint, p_wakeups bigint,
    p_number integer, p_delivered integer[], p_signals text[],
    p_outcome text, p_result text, p_error text,
    s_item integer[], s_seq integer[], s_kind text[], s_name text[], s_status text[],
    s_exec uuid[], s_seconds float8[], s_result text[], s_delivered integer[],
    c_item integer[], c_id uuid[], c_kind text[], c_name text[], c_queue text[],
    c_priority integer[], c_args text[], c_retries integer[], c_timeout float8[],
    c_version integer[], c_wf_timeout float8[], c_seq integer[], c_eager boolean[]
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p_wf uuid := p_wfs[p_item];
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
    IF cardinality(p_delivered) > 0 THEN
        UPDATE {s}.workflow_steps SET delivered_in = p_number
        WHERE workflow_id = p_wf AND seq = ANY (p_delivered);
    END IF;
    PERFORM {s}.insert_commands(
        p_worker, p_wfs, ARRAY[p_item],
        s_item, s_seq, s_kind, s_name, s_status, s_exec, s_seconds, s_result, s_delivered,
        c_item, c_id, c_kind, c_name, c_queue, c_priority, c_args, c_retries, c_timeout,
        c_version, c_wf_timeout, c_seq, c_eager);
    woke := cardinality(p_signals) > 0 AND {s}.consume_signals(p_wf, p_signals);
    IF p_outcome = 'blocked' THEN
        UPDATE {s}.executions
        SET status = CASE WHEN wakeups = p_wakeups AND NOT woke THEN 'waiting' ELSE 'pending' END,
            run_at = now(), worker_id = NULL, sticky_worker_id = p_worker
        WHERE id = p_wf
        RETURNING status INTO final;
        IF final = 'pending' THEN
            PERFORM pg_notify('{work}', wf.queue);
        END IF;
        RETURN final;
    END IF;
    UPDATE {s}.executions
    SET status = p_outcome, result = p_result::json, error = p_error::jsonb,
        finished_at = now(), worker_id = NULL
    WHERE id = p_wf;
    PERFORM pg_notify('{done}', p_wf::text);
    IF wf.parent_id IS NOT NULL THEN
        UPDATE {s}.workflow_steps
        SET status = p_outcome, result = p_result::json, error = p_error::json,
            resolved_at = now()
        WHERE workflow_id = wf.parent_id AND seq = wf.parent_seq AND status = 'scheduled';
        IF FOUND THEN
            UPDATE {s}.executions
            SET wakeups = wakeups + 1,
                status = CASE WHEN status = 'waiting' THEN 'pending' ELSE status END,
                run_at = CASE WHEN status = 'waiting' THEN now() ELSE run_at END
            WHERE id = wf.parent_id
            RETURNING status, queue INTO wf;
            IF wf.status = 'pending' THEN
                PERFORM pg_notify('{work}', wf.queue);
            END IF;
        END IF;
    END IF;
    RETURN p_outcome;
END;
$$;

CREATE OR REPLACE FUNCTION {s}.advance(
    p_worker uuid,
    i_wf uuid[], i_lease bigint[], i_wakeups bigint[], i_number integer[],
    i_outcome text[], i_wf_result text[], i_wf_error text[],
    i_act uuid[], i_act_lease bigint[], i_seq integer[], i_status text[], i_result text[],
    i_error text[],
    d_item integer[], d_seq integer[], g_item integer[], g_name text[],
    s_item integer[], s_seq integer[], s_kind text[], s_name text[], s_status text[],
    s_exec uuid[], s_seconds float8[], s_result text[], s_delivered integer[],
    c_item integer[], c_id uuid[], c_kind text[], c_name text[], c_queue text[],
    c_priority integer[], c_args text[], c_retries integer[], c_timeout float8[],
    c_version integer[], c_wf_timeout float8[], c_seq integer[], c_eager boolean[]
) RETURNS TABLE (item integer, outcome text, lease bigint)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    wf record;
    found_wf boolean;
    fast boolean;
    cur_lease bigint;
    delivered integer[];
    names text[];
    deferred integer[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(cardinality(i_wf), 0) LOOP
        item := i;
        lease := NULL;
        cur_lease := i_lease[i];
        delivered := ARRAY(SELECT r.seq FROM unnest(d_item, d_seq) AS r(item, seq)
                           WHERE r.item = i);
        names := ARRAY(SELECT r.name FROM unnest(g_item, g_name) AS r(item, name)
                       WHERE r.item = i);
        IF i_act[i] IS NOT NULL THEN
            SELECT e.status, e.lease, e.wakeups, e.sticky_worker_id, e.cancel_requested, e.queue
            INTO wf
            FROM {s}.executions e WHERE e.id = i_wf[i]
            FOR UPDATE;
            found_wf := FOUND;
            UPDATE {s}.executions e
            SET status = i_status[i], result = i_result[i]::json,
                error = COALESCE(i_error[i]::jsonb, e.error), finished_at = now(),
                worker_id = NULL
            WHERE e.id = i_act[i] AND e.lease = i_act_lease[i] AND e.status = 'running';
            IF NOT FOUND THEN
                outcome := 'stale';
                RETURN NEXT;
                CONTINUE;
            END IF;
            fast := found_wf AND wf.status = 'waiting' AND wf.lease = i_lease[i]
                    AND wf.wakeups = i_wakeups[i] AND wf.sticky_worker_id = p_worker
                    AND NOT wf.cancel_requested;
            UPDATE {s}.workflow_steps st
            SET status = i_status[i], result = i_result[i]::json, error = i_error[i]::json,
                resolved_at = now(), delivered_in = CASE WHEN fast THEN i_number[i] END
            WHERE st.workflow_id = i_wf[i] AND st.seq = i_seq[i] AND st.status = 'scheduled';
            IF NOT FOUND THEN
                -- The step was closed meanwhile (the workflow cancelled or ended).
                outcome := 'fallback';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF NOT fast THEN
                UPDATE {s}.executions w
                SET wakeups = w.wakeups + 1,
                    status = CASE WHEN w.status = 'waiting' THEN 'pending' ELSE w.status END,
                    run_at = CASE WHEN w.status = 'waiting' THEN now() ELSE w.run_at END
                WHERE w.id = i_wf[i]
                RETURNING w.status INTO wf.status;
                IF wf.status = 'pending' THEN
                    PERFORM pg_notify('{work}', wf.queue);
                END IF;
                outcome := 'fallback';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF i_outcome[i] = 'blocked' AND cardinality(names) = 0
               AND (i = cardinality(i_wf) OR i_wf[i + 1] <> i_wf[i]) THEN
                -- Still waiting here: the row stays as it is; its new steps and executions
                -- are inserted with those of the batch's other such items, at the end
                -- (unless the workflow's next item, right after, needs them).
                deferred := deferred || i;
                outcome := 'waiting';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF i_outcome[i] = 'blocked' THEN
                PERFORM {s}.insert_commands(
                    p_worker, i_wf, ARRAY[i],
                    s_item, s_seq, s_kind, s_name, s_status, s_exec, s_seconds, s_result,
                    s_delivered,
                    c_item, c_id, c_kind, c_name, c_queue, c_priority, c_args, c_retries,
                    c_timeout, c_version, c_wf_timeout, c_seq, c_eager);
                IF {s}.consume_signals(i_wf[i], names) THEN
                    UPDATE {s}.executions w SET status = 'pending', run_at = now()
                    WHERE w.id = i_wf[i];
                    PERFORM pg_notify('{work}', wf.queue);
                    outcome := 'pending';
                ELSE
                    outcome := 'waiting';
                END IF;
                RETURN NEXT;
                CONTINUE;
            END IF;
            -- The activation ends the workflow: claim it, then apply it as any other.
            UPDATE {s}.executions w
            SET status = 'running', lease = w.lease + 1, worker_id = p_worker
            WHERE w.id = i_wf[i]
            RETURNING w.lease INTO cur_lease;
        END IF;
        IF i_outcome[i] <> 'blocked' AND EXISTS (
            SELECT 1 FROM {s}.executions x
            WHERE x.parent_id = i_wf[i] AND x.status IN ('pending', 'running', 'waiting')
        ) THEN
            -- What it started and never waited for ends with it: the caller does that.
            outcome := 'claimed';
            lease := cur_lease;
            RETURN NEXT;
            CONTINUE;
        END IF;
        outcome := coalesce({s}.activate(
            p_worker, i_wf, i, cur_lease, i_wakeups[i], i_number[i], delivered, names,
            i_outcome[i], i_wf_result[i], i_wf_error[i],
            s_item, s_seq, s_kind, s_name, s_status, s_exec, s_seconds, s_result, s_delivered,
            c_item, c_id, c_kind, c_name, c_queue, c_priority, c_args, c_retries, c_timeout,
            c_version, c_wf_timeout, c_seq, c_eager), 'stale');
        RETURN NEXT;
    END LOOP;
    IF cardinality(deferred) > 0 THEN
        PERFORM {s}.insert_commands(
            p_worker, i_wf, deferred,
            s_item, s_seq, s_kind, s_name, s_status, s_exec, s_seconds, s_result, s_delivered,
            c_item, c_id, c_kind, c_name, c_queue, c_priority, c_args, c_retries, c_timeout,
            c_version, c_wf_timeout, c_seq, c_eager);
    END IF;
END;
$$;
