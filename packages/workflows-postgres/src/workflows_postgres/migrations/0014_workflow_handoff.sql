-- A workflow enqueued while a worker sits idle is handed over as a job is (0003).
--
-- Its first activation waited for the worker's claim round, woken by the enqueue's
-- notification: about a third of a short workflow's time from enqueue to result. A handed-over
-- workflow starts as a claimed one does (lease 1, attempt 1, its deadline from
-- p_wf_timeout); a worker with older code than the workflow's version gives it back, as a claim
-- never gives it one (see WorkflowRunner.run). Same signature: enqueue() of 0013 otherwise.
CREATE OR REPLACE FUNCTION {s}.enqueue(
    p_kind text, p_name text, p_queue text, p_priority integer, p_args text,
    p_retries integer, p_timeout float8, p_run_at timestamptz, p_delay float8,
    p_key text, p_version integer, p_wf_timeout float8, p_handoff boolean,
    p_concurrency_key text DEFAULT NULL, p_concurrency_limit integer DEFAULT NULL,
    p_rate_key text DEFAULT NULL, p_key_ttl float8 DEFAULT NULL,
    p_trace_context text DEFAULT NULL
) RETURNS TABLE (id uuid, handed_to uuid)
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid;
    due timestamptz;
    is_held boolean;
    taker uuid;
BEGIN
    IF p_handoff AND p_kind IN ('job', 'workflow') AND p_run_at IS NULL
       AND COALESCE(p_delay, 0) <= 0 AND p_key IS NULL AND p_concurrency_key IS NULL
       AND p_rate_key IS NULL THEN
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
                'version', p_version, 'id', {s}.new_id(),
                'deadline', now() + make_interval(secs => p_wf_timeout)))) a;
            IF new_id IS NOT NULL THEN
                -- admit() inserts only the columns it knows: the context is set after, in
                -- the same transaction, so the worker reading the handoff finds it. Only a
                -- traced enqueue pays this second write.
                IF p_trace_context IS NOT NULL THEN
                    UPDATE {s}.executions x SET trace_context = p_trace_context::jsonb
                    WHERE x.id = new_id;
                END IF;
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
         idempotency_expires_at, trace_context)
    VALUES ({s}.new_id(), p_kind, p_name, p_queue, p_priority, p_args::json, p_retries,
            p_timeout,
            COALESCE(p_run_at, now() + make_interval(secs => COALESCE(p_delay, 0))),
            p_key, p_version, now() + make_interval(secs => p_wf_timeout),
            p_concurrency_key, p_concurrency_limit, p_rate_key,
            now() + make_interval(secs => p_key_ttl), p_trace_context::jsonb)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING e.id, e.run_at, e.held INTO new_id, due, is_held;
    IF new_id IS NULL THEN
        -- The key is taken (see 0009): past its window it is taken off the old row, and the
        -- caller enqueues again.
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
