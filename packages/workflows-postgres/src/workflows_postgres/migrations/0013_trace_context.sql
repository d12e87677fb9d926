-- Trace context on the execution row (workflows.tracing): the W3C carrier (traceparent,
-- tracestate, baggage) of the span that enqueued or scheduled the execution, as JSON text.
--
-- On the row, not in the arguments: the arguments are the user's (replayed, shown, passed to
-- the code as they are), and a retry or a later activation must find the same context.
-- Nullable, without a default: adding it rewrites no row, and every row written without
-- tracing (by code from before, or with WORKFLOWS_TRACING=off) keeps NULL.
ALTER TABLE {s}.executions ADD COLUMN trace_context jsonb;

-- What a worker is handed (0006) gains the context its attempt's span continues.
ALTER TYPE {s}.claimed ADD ATTRIBUTE trace_context text;

CREATE OR REPLACE FUNCTION {s}.claim_row(e {s}.executions) RETURNS {s}.claimed
LANGUAGE sql AS $$
    SELECT ROW(e.id::text, e.kind, e.name, e.queue, e.args::text, e.attempts, e.max_retries,
               e.timeout_seconds, e.lease, e.version, e.wakeups, e.parent_id::text,
               e.parent_seq, e.deadline,
               -- isfinite: a row written by hand (or by an old producer) with run_at
               -- -infinity must not fail every claim of its queue.
               CASE WHEN isfinite(e.run_at)
                    THEN extract(epoch FROM now() - e.run_at)::float8 END,
               CASE WHEN e.kind = 'workflow' THEN {s}.undelivered(e.id) END,
               e.trace_context::text)::{s}.claimed
$$;

-- enqueue (0009) with p_trace_context. Dropped, not overloaded: a call with 17 arguments (code
-- from before) would fit both, and reaches this one through the default.
DROP FUNCTION {s}.enqueue(text, text, text, integer, text, integer, float8, timestamptz,
                          float8, text, integer, float8, boolean, text, integer, text, float8);

CREATE FUNCTION {s}.enqueue(
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

-- insert_plans (0007) writing each child's "trace_context": the span of the activation that
-- started it, so a workflow's activities and children continue its trace. An eager child is
-- inserted by admit(), which knows no such column: its context is set after, in the same
-- transaction, and only for the children that have one (an untraced activation writes once).
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
        UPDATE {s}.executions x SET trace_context = (c.value->>'trace_context')::jsonb
        FROM jsonb_array_elements(eager) AS c
        WHERE c.value->>'trace_context' IS NOT NULL
          AND x.id = (c.value->>'id')::uuid
          AND x.id = ANY (COALESCE(admitted, '{}'));
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
