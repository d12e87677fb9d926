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
