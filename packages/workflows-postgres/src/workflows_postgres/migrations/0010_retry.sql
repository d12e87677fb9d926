-- Retrying by hand (`workflows retry`, workflows.retry): a failed or cancelled root execution
-- starts again as a new attempt; a workflow resumes from its history.
--
-- * executions.retry_base: the attempts made before the last manual retry. A retry gives a
--   job or an activity its retries again (as many as it was queued with): max_retries grows
--   by the attempts spent, and max_retries - retry_base stays the number it was queued with.
--   attempts keeps counting every attempt (the worker compares attempts with max_retries).
-- * executions.retried_at: when it was last retried by hand. A workflow's timeout runs again
--   from there: deadline - COALESCE(retried_at, created_at) stays its timeout.
-- * A workflow's attempts count its runs: 1 when first claimed, one more per manual retry
--   (admit() below keeps the count instead of setting 1 on every activation).

ALTER TABLE {s}.executions
    ADD COLUMN retry_base integer NOT NULL DEFAULT 0,
    ADD COLUMN retried_at timestamptz;

-- The bulk retry's walk: the failed or cancelled roots of a queue in the order they ended.
-- Partial, so the hot path's completed rows never enter it.
CREATE INDEX executions_retryable ON {s}.executions (queue, status, finished_at, id)
    WHERE parent_id IS NULL AND status IN ('failed', 'cancelled');

-- admit() (0007) claimed a workflow with attempts = 1 on every activation: it keeps the count
-- now (at least 1), so a retried workflow's second run says 2. Rewritten from its stored text
-- rather than copied here whole: the three assignments are the only change, and the check
-- below fails the migration if the text it expects is not there.
DO $$
DECLARE
    def text := pg_get_functiondef('{s}.admit'::regproc);
    old text := 'attempts = CASE WHEN e.kind = ''workflow'' THEN 1 ELSE e.attempts + 1 END';
    new text := 'attempts = CASE WHEN e.kind = ''workflow'' THEN greatest(e.attempts, 1) '
                'ELSE e.attempts + 1 END';
BEGIN
    IF (length(def) - length(replace(def, old, ''))) / length(old) <> 3 THEN
        RAISE EXCEPTION 'admit() is not the function 0010 expects to change';
    END IF;
    EXECUTE replace(def, old, new);
END;
$$;

-- One execution and, for a workflow, the steps to run again: made pending as a new attempt.
-- The caller holds p_id's row lock and has checked that nothing under it still runs.
-- Returns the ids made pending (p_id and the executions of the steps reopened under it).
--
-- Which steps of a workflow run again: those that ended it. Ended by its own code (failed,
-- not by its deadline): the failed or cancelled steps handed to the code in its last
-- activation (the failure it did not survive). Ended by a cancel or a deadline (or a parent
-- that ended): the steps that closed without the code ever seeing them. A failure handed
-- over earlier, which the code survived, stays: replay hands it over again and the code takes
-- the same path. Completed steps are never touched (replay reads them); a step closed while
-- its execution went on to complete takes that execution's result instead of running again.
-- A reopened timer or signal wait runs its whole duration again from now.
CREATE FUNCTION {s}.reopen(p_id uuid) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    ended record;
    by_code boolean;
    last_activation integer;
    st record;
    sub record;
    ids uuid[] := ARRAY[p_id];
    waits text[] := '{}';
BEGIN
    SELECT e.kind, e.status, e.error INTO ended
    FROM {s}.executions e WHERE e.id = p_id FOR UPDATE;
    UPDATE {s}.executions e
    SET status = 'pending', run_at = now(), finished_at = NULL, result = NULL,
        worker_id = NULL, sticky_worker_id = NULL, cancel_requested = false, releases = 0,
        -- A claim from before the retry (a worker's copy in memory) is stale from here on.
        lease = e.lease + 1,
        attempts = CASE WHEN e.kind = 'workflow' THEN e.attempts + 1 ELSE e.attempts END,
        max_retries = CASE WHEN e.kind = 'workflow' THEN e.max_retries
                           ELSE e.attempts + e.max_retries - e.retry_base END,
        retry_base = e.attempts,
        -- A workflow's run starts anew: a rate limit counts it as a start, as a new one.
        started_at = CASE WHEN e.kind = 'workflow' THEN NULL ELSE e.started_at END,
        deadline = e.deadline - COALESCE(e.retried_at, e.created_at) + now(),
        retried_at = now()
    WHERE e.id = p_id;
    -- (The status change takes a concurrency key's slot, or holds it: key_slot_changed().)
    IF ended.kind <> 'workflow' THEN
        RETURN ids;
    END IF;
    by_code := ended.status = 'failed'
               AND (ended.error->>'type') IS DISTINCT FROM 'WorkflowTimeoutError';
    SELECT max(w.delivered_in) INTO last_activation
    FROM {s}.workflow_steps w WHERE w.workflow_id = p_id;
    FOR st IN
        SELECT w.seq, w.kind, w.name, w.execution_id
        FROM {s}.workflow_steps w
        WHERE w.workflow_id = p_id AND w.kind <> 'version'
          AND w.status IN ('failed', 'cancelled')
          AND (w.delivered_in IS NULL OR (by_code AND w.delivered_in = last_activation))
        ORDER BY w.seq
    LOOP
        IF st.kind IN ('activity', 'child') THEN
            SELECT x.status, x.result INTO sub
            FROM {s}.executions x WHERE x.id = st.execution_id FOR UPDATE;
            CONTINUE WHEN NOT FOUND;
            IF sub.status = 'completed' THEN
                UPDATE {s}.workflow_steps w
                SET status = 'completed', result = sub.result, error = NULL, delivered_in = NULL,
                    resolved_at = now()
                WHERE w.workflow_id = p_id AND w.seq = st.seq;
                CONTINUE;
            END IF;
            ids := ids || {s}.reopen(st.execution_id);
        ELSIF st.kind = 'signal' THEN
            waits := waits || st.name;
        END IF;
        UPDATE {s}.workflow_steps w
        SET status = 'scheduled', result = NULL, error = NULL, delivered_in = NULL,
            resolved_at = NULL, fire_at = w.fire_at - w.created_at + now(), created_at = now()
        WHERE w.workflow_id = p_id AND w.seq = st.seq;
    END LOOP;
    IF cardinality(waits) > 0 THEN
        -- A signal stored while nothing waited for it goes to the reopened wait.
        PERFORM {s}.consume_signals(p_id, waits);
    END IF;
    RETURN ids;
END;
$$;

-- Retry one execution by hand. Its row lock is taken first, so of two retries of the same id
-- one retries it and the other finds it pending ('not_final'). outcome: 'retried', or why
-- not: 'missing', 'child' (a step of workflow `detail`: retry that workflow, which runs the
-- step again), 'not_final' (`status` is not failed or cancelled), 'busy' (`detail` under it
-- still runs: a cancel or an end is still stopping it).
CREATE FUNCTION {s}.retry(p_id uuid)
RETURNS TABLE (id text, kind text, status text, attempts integer, outcome text, detail text)
LANGUAGE plpgsql ROWS 1 AS $$
DECLARE
    target record;
    running uuid;
    ids uuid[];
BEGIN
    SELECT e.id, e.kind, e.status, e.attempts, e.parent_id INTO target
    FROM {s}.executions e WHERE e.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT p_id::text, NULL::text, NULL::text, NULL::integer, 'missing'::text,
                            NULL::text;
        RETURN;
    END IF;
    IF target.parent_id IS NOT NULL THEN
        RETURN QUERY SELECT p_id::text, target.kind, target.status, target.attempts,
                            'child'::text, target.parent_id::text;
        RETURN;
    END IF;
    IF target.status NOT IN ('failed', 'cancelled') THEN
        RETURN QUERY SELECT p_id::text, target.kind, target.status, target.attempts,
                            'not_final'::text, NULL::text;
        RETURN;
    END IF;
    IF target.kind = 'workflow' THEN
        -- (Only a workflow starts anything: a job's retry skips the walk.)
        WITH RECURSIVE tree AS (
            SELECT x.id FROM {s}.executions x WHERE x.parent_id = p_id
            UNION ALL
            SELECT c.id FROM {s}.executions c JOIN tree t ON c.parent_id = t.id
        )
        SELECT x.id INTO running
        FROM tree JOIN {s}.executions x ON x.id = tree.id
        WHERE x.status IN ('pending', 'running', 'waiting')
        LIMIT 1;
    END IF;
    IF running IS NOT NULL THEN
        RETURN QUERY SELECT p_id::text, target.kind, target.status, target.attempts,
                            'busy'::text, running::text;
        RETURN;
    END IF;
    ids := {s}.reopen(p_id);
    PERFORM pg_notify('{work}', q.queue)
    FROM (SELECT DISTINCT x.queue FROM {s}.executions x
          WHERE x.id = ANY (ids) AND x.status = 'pending' AND NOT x.held) q;
    RETURN QUERY SELECT x.id::text, x.kind, x.status, x.attempts, 'retried'::text, NULL::text
                 FROM {s}.executions x WHERE x.id = p_id;
END;
$$;
