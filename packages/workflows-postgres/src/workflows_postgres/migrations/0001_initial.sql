-- The whole store lives in one schema; {s} is replaced by its quoted, validated name.

CREATE TABLE {s}.executions (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('job', 'workflow', 'activity')),
    name             text NOT NULL,
    queue            text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0,
    args             jsonb NOT NULL,
    result           jsonb,
    error            jsonb,
    attempts         integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL,
    timeout_seconds  double precision,
    run_at           timestamptz NOT NULL DEFAULT now(),
    idempotency_key  text,
    parent_id        uuid REFERENCES {s}.executions (id) ON DELETE CASCADE,
    parent_seq       integer,
    version          integer,
    deadline         timestamptz,
    worker_id        uuid,
    -- Fencing token: every claim bumps it and every outcome is recorded only if it still matches.
    lease            bigint NOT NULL DEFAULT 0,
    -- Workflows: bumped by every step resolution so an activation can tell it missed one.
    wakeups          bigint NOT NULL DEFAULT 0,
    sticky_worker_id uuid,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

-- The claim query walks this index in order and stops after LIMIT rows, whatever the backlog.
CREATE INDEX executions_claim ON {s}.executions (queue, priority DESC, run_at, id)
    WHERE status = 'pending';
CREATE UNIQUE INDEX executions_idempotency_key ON {s}.executions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX executions_running_by_worker ON {s}.executions (worker_id)
    WHERE status = 'running';
CREATE INDEX executions_parent ON {s}.executions (parent_id)
    WHERE parent_id IS NOT NULL;
CREATE INDEX executions_created ON {s}.executions (created_at DESC);
CREATE INDEX executions_deadline ON {s}.executions (deadline)
    WHERE deadline IS NOT NULL AND status IN ('pending', 'running', 'waiting');

CREATE TABLE {s}.workflow_steps (
    workflow_id  uuid NOT NULL REFERENCES {s}.executions (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('activity', 'child', 'timer', 'signal', 'version')),
    name         text NOT NULL,
    status       text NOT NULL CHECK (status IN ('scheduled', 'completed', 'failed', 'cancelled')),
    execution_id uuid,
    fire_at      timestamptz,
    result       jsonb,
    error        jsonb,
    -- The activation that handed the resolution to the code; replay hands it over in that group.
    delivered_in integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    PRIMARY KEY (workflow_id, seq)
);
CREATE INDEX workflow_steps_due ON {s}.workflow_steps (fire_at)
    WHERE status = 'scheduled' AND fire_at IS NOT NULL;
-- A claimed workflow's resolutions not yet handed to its code, read with every claim.
CREATE INDEX workflow_steps_undelivered ON {s}.workflow_steps (workflow_id, seq)
    WHERE delivered_in IS NULL AND status <> 'scheduled';

CREATE TABLE {s}.workflow_signals (
    id           bigserial PRIMARY KEY,
    workflow_id  uuid NOT NULL REFERENCES {s}.executions (id) ON DELETE CASCADE,
    name         text NOT NULL,
    payload      jsonb,
    consumed_seq integer,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_signals_unconsumed ON {s}.workflow_signals (workflow_id, name, id)
    WHERE consumed_seq IS NULL;

CREATE TABLE {s}.worker_heartbeats (
    worker_id      uuid PRIMARY KEY,
    hostname       text NOT NULL,
    pid            integer NOT NULL,
    queues         text[] NOT NULL,
    code_version   text NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now()
);

-- One workflow activation in one round trip: fenced on the claim, it records which
-- resolutions the code was handed, writes the new steps and the executions they start (eager
-- ones already claimed by the calling worker), delivers waiting signals, then suspends or
-- finishes the workflow. Returns the workflow's new status, or NULL when the claim was lost.
CREATE FUNCTION {s}.apply_activation(
    p_wf uuid, p_lease bigint, p_worker uuid, p_wakeups bigint, p_number integer,
    p_delivered integer[],
    s_seq integer[], s_kind text[], s_name text[], s_status text[], s_exec uuid[],
    s_seconds float8[], s_result text[], s_delivered integer[],
    c_id uuid[], c_kind text[], c_name text[], c_queue text[], c_priority integer[],
    c_args text[], c_retries integer[], c_timeout float8[], c_version integer[],
    c_wf_timeout float8[], c_seq integer[], c_eager boolean[],
    p_signals text[], p_outcome text, p_result text, p_error text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    wf record;
    woke boolean := false;
    sig_name text;
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
    IF cardinality(s_seq) > 0 THEN
        INSERT INTO {s}.workflow_steps
            (workflow_id, seq, kind, name, status, execution_id, fire_at, result, delivered_in)
        SELECT p_wf, r.seq, r.kind, r.name, r.status, r.exec,
               CASE WHEN r.seconds IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.seconds) END,
               r.result::jsonb, r.delivered
        FROM unnest(s_seq, s_kind, s_name, s_status, s_exec, s_seconds, s_result, s_delivered)
             AS r(seq, kind, name, status, exec, seconds, result, delivered);
    END IF;
    IF cardinality(c_id) > 0 THEN
        INSERT INTO {s}.executions
            (id, kind, name, queue, priority, args, max_retries, timeout_seconds, version,
             deadline, parent_id, parent_seq, status, worker_id, lease, attempts, started_at)
        SELECT r.id, r.kind, r.name, r.queue, r.priority, r.args::jsonb, r.retries, r.timeout,
               r.version,
               CASE WHEN r.wf_timeout IS NULL THEN NULL
                    ELSE now() + make_interval(secs => r.wf_timeout) END,
               p_wf, r.seq,
               CASE WHEN r.eager THEN 'running' ELSE 'pending' END,
               CASE WHEN r.eager THEN p_worker END,
               CASE WHEN r.eager THEN 1 ELSE 0 END,
               CASE WHEN r.eager THEN 1 ELSE 0 END,
               CASE WHEN r.eager THEN now() END
        FROM unnest(c_id, c_kind, c_name, c_queue, c_priority, c_args, c_retries, c_timeout,
                    c_version, c_wf_timeout, c_seq, c_eager)
             AS r(id, kind, name, queue, priority, args, retries, timeout, version, wf_timeout,
                  seq, eager);
        PERFORM pg_notify('{work}', q.queue)
        FROM (SELECT DISTINCT r.queue FROM unnest(c_queue, c_eager) AS r(queue, eager)
              WHERE NOT r.eager) q;
    END IF;
    FOREACH sig_name IN ARRAY p_signals LOOP
        -- A signal sent before the wait: hand the oldest of that name to the first open wait.
        WITH step AS (
            SELECT st.seq FROM {s}.workflow_steps st
            WHERE st.workflow_id = p_wf AND st.kind = 'signal' AND st.name = sig_name
              AND st.status = 'scheduled'
            ORDER BY st.seq LIMIT 1
        ), sig AS (
            UPDATE {s}.workflow_signals g SET consumed_seq = (SELECT seq FROM step)
            WHERE g.id = (SELECT g2.id FROM {s}.workflow_signals g2
                          WHERE g2.workflow_id = p_wf AND g2.name = sig_name
                            AND g2.consumed_seq IS NULL
                          ORDER BY g2.id LIMIT 1)
              AND EXISTS (SELECT 1 FROM step)
            RETURNING g.payload, g.consumed_seq
        )
        UPDATE {s}.workflow_steps st
        SET status = 'completed', result = sig.payload, resolved_at = now()
        FROM sig
        WHERE st.workflow_id = p_wf AND st.seq = sig.consumed_seq;
        IF FOUND THEN
            woke := true;
        END IF;
    END LOOP;
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
    SET status = p_outcome, result = p_result::jsonb, error = p_error::jsonb,
        finished_at = now(), worker_id = NULL
    WHERE id = p_wf;
    PERFORM pg_notify('{done}', p_wf::text);
    IF wf.parent_id IS NOT NULL THEN
        UPDATE {s}.workflow_steps
        SET status = p_outcome, result = p_result::jsonb, error = p_error::jsonb,
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
