-- Retention: finished executions pruned after a time, and idempotency keys with a window.
--
-- * prune(): one bounded batch of whole trees whose root finished before its status's cutoff.
--   The maintenance leader (and `workflows prune`) calls it again until a batch comes back
--   short, each call a short transaction of its own.
-- * executions.idempotency_expires_at: the end of a key's window (NULL: the key holds as long
--   as its row exists). An enqueue that meets an expired key takes it over (see enqueue()).

ALTER TABLE {s}.executions ADD COLUMN idempotency_expires_at timestamptz;

-- Finished rows by age within a status: prune() walks it oldest first, from the start, and
-- stops at its batch; the queue statistics count finished rows per status from it too.
CREATE INDEX executions_finished ON {s}.executions (status, finished_at)
    WHERE finished_at IS NOT NULL;

-- The delete of a workflow's signals looks them up by workflow; the only index on them so far
-- (workflow_signals_unconsumed) holds the unconsumed ones, and consumed ones would be found by
-- reading the whole table for every workflow deleted.
CREATE INDEX workflow_signals_workflow ON {s}.workflow_signals (workflow_id);

-- A root and every execution under it, when all of them have finished and the root finished
-- before its status's cutoff (p_completed etc.: how long each status is kept; NULL: forever).
-- A tree is never deleted in part: steps, signals and children go with their root in one
-- statement. Only finished rows are read or locked: nothing a claim or a worker's write waits
-- for, and a root another transaction holds (a signal sent to it, a cancel) is skipped, not
-- waited for. p_batch: at most that many roots (NULL: all of them, for a dry run); p_dry_run:
-- count what would go, lock and delete nothing.
CREATE FUNCTION {s}.prune(
    p_completed interval, p_failed interval, p_cancelled interval, p_batch integer,
    p_dry_run boolean
) RETURNS TABLE (roots bigint, executions bigint, steps bigint, signals bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_keep interval;
    v_ids uuid[] := '{}';
    v_room integer;
BEGIN
    FOREACH v_status IN ARRAY ARRAY['completed', 'failed', 'cancelled'] LOOP
        v_keep := CASE v_status WHEN 'completed' THEN p_completed
                                WHEN 'failed' THEN p_failed ELSE p_cancelled END;
        CONTINUE WHEN v_keep IS NULL;
        v_room := p_batch - cardinality(v_ids);
        EXIT WHEN v_room <= 0;
        -- The tree's test inside the walk, before the LIMIT: roots whose children still run
        -- cannot fill a batch and starve the ones behind them.
        IF p_dry_run THEN
            v_ids := v_ids || ARRAY(
                SELECT e.id FROM {s}.executions e
                WHERE e.status = v_status AND e.finished_at < now() - v_keep
                  AND e.parent_id IS NULL AND {s}.tree_finished(e.id)
                ORDER BY e.finished_at
                LIMIT v_room);
        ELSE
            v_ids := v_ids || ARRAY(
                SELECT e.id FROM {s}.executions e
                WHERE e.status = v_status AND e.finished_at < now() - v_keep
                  AND e.parent_id IS NULL AND {s}.tree_finished(e.id)
                ORDER BY e.finished_at
                LIMIT v_room
                FOR UPDATE SKIP LOCKED);
        END IF;
    END LOOP;
    IF p_dry_run THEN
        RETURN QUERY
        WITH RECURSIVE tree AS (
            SELECT x.id FROM unnest(v_ids) AS x(id)
            UNION ALL
            SELECT c.id FROM {s}.executions c JOIN tree t ON c.parent_id = t.id
        )
        SELECT cardinality(v_ids)::bigint,
               (SELECT count(*) FROM tree),
               (SELECT count(*) FROM {s}.workflow_steps st WHERE st.workflow_id IN
                   (SELECT tree.id FROM tree)),
               (SELECT count(*) FROM {s}.workflow_signals sg WHERE sg.workflow_id IN
                   (SELECT tree.id FROM tree));
        RETURN;
    END IF;
    -- The foreign keys cascade too, but deleted here their rows are counted; the roots are
    -- locked, and what is under a finished tree no one else writes.
    RETURN QUERY
    WITH RECURSIVE tree AS (
        SELECT x.id FROM unnest(v_ids) AS x(id)
        UNION ALL
        SELECT c.id FROM {s}.executions c JOIN tree t ON c.parent_id = t.id
    ), sg AS (
        DELETE FROM {s}.workflow_signals d USING tree WHERE d.workflow_id = tree.id
        RETURNING 1
    ), st AS (
        DELETE FROM {s}.workflow_steps d USING tree WHERE d.workflow_id = tree.id
        RETURNING 1
    ), ex AS (
        DELETE FROM {s}.executions d USING tree WHERE d.id = tree.id
        RETURNING 1
    )
    SELECT cardinality(v_ids)::bigint, (SELECT count(*) FROM ex), (SELECT count(*) FROM st),
           (SELECT count(*) FROM sg);
END;
$$;

-- Whether every execution under p_root (children, theirs, ...) has finished. A job's answer
-- costs one probe of executions_parent.
CREATE FUNCTION {s}.tree_finished(p_root uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE tree AS (
        SELECT c.id, c.status FROM {s}.executions c WHERE c.parent_id = p_root
        UNION ALL
        SELECT c.id, c.status FROM {s}.executions c JOIN tree t ON c.parent_id = t.id
    )
    SELECT NOT EXISTS (SELECT 1 FROM tree
                       WHERE tree.status NOT IN ('completed', 'failed', 'cancelled'))
$$;

-- enqueue (0007) with p_key_ttl: a key given with a window (seconds) holds for that long from
-- the insert; an enqueue that meets the key after its window takes it off the old row (which
-- keeps its status and results, without the key) and its caller's next try inserts a new
-- execution. The old
-- function is dropped, not overloaded: a call with 16 arguments (code from before) would fit
-- both, and reaches this one through the default.
DROP FUNCTION {s}.enqueue(text, text, text, integer, text, integer, float8, timestamptz,
                          float8, text, integer, float8, boolean, text, integer, text);

CREATE FUNCTION {s}.enqueue(
    p_kind text, p_name text, p_queue text, p_priority integer, p_args text,
    p_retries integer, p_timeout float8, p_run_at timestamptz, p_delay float8,
    p_key text, p_version integer, p_wf_timeout float8, p_handoff boolean,
    p_concurrency_key text DEFAULT NULL, p_concurrency_limit integer DEFAULT NULL,
    p_rate_key text DEFAULT NULL, p_key_ttl float8 DEFAULT NULL
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
         idempotency_key, version, deadline, concurrency_key, concurrency_limit, rate_key,
         idempotency_expires_at)
    VALUES ({s}.new_id(), p_kind, p_name, p_queue, p_priority, p_args::json, p_retries,
            p_timeout,
            COALESCE(p_run_at, now() + make_interval(secs => COALESCE(p_delay, 0))),
            p_key, p_version, now() + make_interval(secs => p_wf_timeout),
            p_concurrency_key, p_concurrency_limit, p_rate_key,
            now() + make_interval(secs => p_key_ttl))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING e.id, e.run_at, e.held INTO new_id, due, is_held;
    IF new_id IS NULL THEN
        -- The key is taken. Past its window it is taken off the old row, and the caller
        -- (ops.enqueue), finding no row with the key, enqueues again. Of two enqueues racing
        -- for it, the second waits here for the first's transaction, then finds the key
        -- gone from that row and takes nothing; of their next inserts one wins, and the
        -- other reads the winner's id. Without a window (NULL), the key stays. (Not retried
        -- here: an enqueue without a key runs 0007's statements and nothing more.)
        UPDATE {s}.executions x SET idempotency_key = NULL, idempotency_expires_at = NULL
        WHERE x.idempotency_key = p_key AND x.idempotency_expires_at <= now();
        RETURN;
    END IF;
    id := new_id;
    IF due <= now() AND NOT is_held THEN
        PERFORM pg_notify('{work}', p_queue);
    END IF;
    RETURN NEXT;
END;
$$;
