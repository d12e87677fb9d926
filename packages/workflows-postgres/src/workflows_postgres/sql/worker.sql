-- A worker's statements: the claim-and-record round, workflow activations, handoff, liveness
-- and the leader's maintenance. Format and placeholders as in client.sql. Every way into
-- `running` goes through {s}.admit() (0006): a statement here never sets it itself.

-- name: pump
-- The worker's one statement per round: record the outcomes of many jobs/activities ($1, JSON
-- rows) and claim new work ($2 queues, $3 at most, for worker $4 knowing workflow versions
-- $5/$6). An outcome is applied only if its claim still holds (same lease, still running): a
-- worker that lost its claim records nothing. A workflow an outcome resolves that this worker
-- holds in memory ($7) is admitted straight back, to resume at once; any other is woken for
-- whoever claims it. The claim skips the workflows this statement wakes. The root jobs it
-- finishes are announced on the done channel when $8 (a results listener is connected: see
-- results_listening).
-- Order matters where functions run: each sees what the CTEs it reads have written.
WITH v AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
        AS v(id uuid, lease bigint, status text, result text, error text, retry_delay float8)
), upd AS (
    UPDATE {s}.executions e
    SET status = v.status,
        result = v.result::json,
        releases = 0,
        error = COALESCE(v.error::jsonb, e.error),
        finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE now() END,
        run_at = CASE WHEN v.status = 'pending'
                      THEN now() + make_interval(secs => COALESCE(v.retry_delay, 0))
                      ELSE e.run_at END,
        worker_id = NULL,
        cancel_requested = CASE WHEN v.status = 'pending' THEN false ELSE e.cancel_requested END
    FROM v
    WHERE e.id = v.id AND e.lease = v.lease AND e.status = 'running'
    RETURNING e.id, e.kind, e.queue, e.status, e.parent_id, e.parent_seq, e.result, e.error,
              e.run_at
), steps AS (
    -- The set-based twin of resolve_step() for a round's outcomes; the step keeps the
    -- outcome's text as the worker wrote it (json, not jsonb: see 0002).
    UPDATE {s}.workflow_steps st
    SET status = upd.status, result = v.result::json,
        error = COALESCE(v.error::json, upd.error::json), resolved_at = now()
    FROM upd JOIN v ON v.id = upd.id
    WHERE upd.parent_id IS NOT NULL AND upd.status IN ('completed', 'failed', 'cancelled')
      AND st.workflow_id = upd.parent_id AND st.seq = upd.parent_seq AND st.status = 'scheduled'
    RETURNING st.workflow_id
), r AS (
    -- LATERAL lookups by id: a nested loop on the primary key whatever the plan estimates.
    SELECT s.workflow_id, count(*) AS n,
           bool_and($7::bool AND x.status = 'waiting'
                    AND x.sticky_worker_id IS NOT DISTINCT FROM $4::uuid
                    AND NOT x.cancel_requested) AS direct
    FROM steps s
    CROSS JOIN LATERAL (SELECT y.status, y.sticky_worker_id, y.cancel_requested
                        FROM {s}.executions y WHERE y.id = s.workflow_id) x
    GROUP BY s.workflow_id
), direct AS (
    -- The functions run only when there is something for them (most rounds of jobs: never).
    SELECT a AS e
    FROM (SELECT array_agg(r.workflow_id) AS ids, array_agg(r.n) AS ns FROM r WHERE r.direct) d
    CROSS JOIN LATERAL {s}.admit($4::uuid, 'waiting', p_ids => d.ids, p_wakeups => d.ns) a
    WHERE d.ids IS NOT NULL
), woken AS (
    -- Every other one, and one no longer waiting by the time it was to be admitted.
    SELECT {s}.wake(w.ids, w.ns) AS notified
    FROM (SELECT array_agg(r.workflow_id) AS ids, array_agg(r.n) AS ns
          FROM r WHERE r.workflow_id NOT IN (SELECT (d.e).id FROM direct d)) w
    WHERE w.ids IS NOT NULL
), claimed AS (
    SELECT a AS e FROM {s}.admit(
        $4::uuid, 'claim', p_queues => $2::text[], p_limit => $3, p_names => $5::text[],
        p_max => $6::int[], p_exclude => ARRAY(SELECT r.workflow_id FROM r)) a
), notified AS (
    SELECT pg_notify('{work}', q.queue)
    FROM (SELECT DISTINCT queue FROM upd WHERE status = 'pending' AND run_at <= now()) q
), announced AS (
    -- Whoever waits for a root job's result (results.py) hears of its end: one notification
    -- per round, ids joined by commas, 200 to a payload (37 bytes each, under the 8000 bytes
    -- a payload may hold). An activity's end goes to its workflow, which nobody waits on
    -- through it. A commit that notifies holds the notify queue's lock until its WAL is
    -- flushed (PostgreSQL orders notifications so), so concurrent rounds would no longer
    -- flush together: only while a results listener is connected ($8, which the store reads
    -- apart, at most twice a second, rather than reading every backend's status each round).
    SELECT pg_notify('{done}', string_agg(f.id::text, ','))
    FROM (SELECT id, (row_number() OVER () - 1) / 200 AS chunk
          FROM upd
          WHERE $8::bool AND parent_id IS NULL
            AND status IN ('completed', 'failed', 'cancelled')) f
    GROUP BY f.chunk
), taken AS (
    SELECT e FROM claimed UNION ALL SELECT e FROM direct
)
SELECT (SELECT array_agg(id::text) FROM upd) AS recorded,
       (SELECT count(*) FROM notified) + (SELECT COALESCE(sum(notified), 0) FROM woken)
           + (SELECT count(*) FROM announced) AS notified,
       (t.c).*
-- claim_row() once per row in a subquery kept apart (OFFSET 0): `(claim_row(e)).*` inlines
-- the function once per column, and planning that took over 2 ms, paid by each of the first
-- five runs of the statement on every connection (before the plan is cached).
FROM (SELECT {s}.claim_row(taken.e) AS c FROM (SELECT 1) AS one LEFT JOIN taken ON true
      OFFSET 0) AS t

-- name: pump_jobs
-- pump for a round whose outcomes end no activity (jobs' outcomes, and retries of either):
-- its CTEs but those for workflow steps, which the server set up on every run of pump
-- whether they had rows or not (7 to 11% more jobs/s for one worker draining no-op jobs).
-- Parameters as pump's without $7 (so $8 is $7 here). An outcome that would end a row with a
-- parent is not recorded here, as if its claim were lost: the worker sends those to pump.
-- Its CTEs are pump's, word for word but for the one guard and that number
-- (tests/unit/test_pump_statements.py).
WITH v AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
        AS v(id uuid, lease bigint, status text, result text, error text, retry_delay float8)
), upd AS (
    UPDATE {s}.executions e
    SET status = v.status,
        result = v.result::json,
        releases = 0,
        error = COALESCE(v.error::jsonb, e.error),
        finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE now() END,
        run_at = CASE WHEN v.status = 'pending'
                      THEN now() + make_interval(secs => COALESCE(v.retry_delay, 0))
                      ELSE e.run_at END,
        worker_id = NULL,
        cancel_requested = CASE WHEN v.status = 'pending' THEN false ELSE e.cancel_requested END
    FROM v
    WHERE e.id = v.id AND e.lease = v.lease AND e.status = 'running'
      AND (e.parent_id IS NULL OR v.status = 'pending')
    RETURNING e.id, e.kind, e.queue, e.status, e.parent_id, e.parent_seq, e.result, e.error,
              e.run_at
), claimed AS (
    SELECT a AS e FROM {s}.admit(
        $4::uuid, 'claim', p_queues => $2::text[], p_limit => $3, p_names => $5::text[],
        p_max => $6::int[]) a
), notified AS (
    SELECT pg_notify('{work}', q.queue)
    FROM (SELECT DISTINCT queue FROM upd WHERE status = 'pending' AND run_at <= now()) q
), announced AS (
    SELECT pg_notify('{done}', string_agg(f.id::text, ','))
    FROM (SELECT id, (row_number() OVER () - 1) / 200 AS chunk
          FROM upd
          WHERE $7::bool AND parent_id IS NULL
            AND status IN ('completed', 'failed', 'cancelled')) f
    GROUP BY f.chunk
)
SELECT (SELECT array_agg(id::text) FROM upd) AS recorded,
       (SELECT count(*) FROM notified) + (SELECT count(*) FROM announced) AS notified,
       (t.c).*
FROM (SELECT {s}.claim_row(claimed.e) AS c FROM (SELECT 1) AS one LEFT JOIN claimed ON true
      OFFSET 0) AS t

-- name: claim
-- A round with no outcome to record: the claim alone ($1 worker, $2 queues, $3 at most, $4/$5
-- the workflow versions it knows).
-- claim_row() in a subquery kept apart, as in pump.
SELECT NULL::text[] AS recorded, 0::bigint AS notified, (t.c).*
FROM (SELECT {s}.claim_row(a) AS c
      FROM {s}.admit($1::uuid, 'claim', p_queues => $2::text[], p_limit => $3,
                     p_names => $4::text[], p_max => $5::int[]) a
      OFFSET 0) AS t

-- name: load_history
SELECT seq, kind, name, status, result::text AS result, error::text AS error, delivered_in
FROM {s}.workflow_steps
WHERE workflow_id = $1::uuid
ORDER BY seq

-- name: apply_activation
-- One activation as one JSON object (see activate() in 0006).
SELECT {s}.apply_activation($1::uuid, $2::jsonb) AS status

-- name: advance
-- A batch of activations and the activity outcomes they follow (see advance() in 0006).
SELECT item, outcome, lease FROM {s}.advance($1::uuid, $2::jsonb)

-- name: running_here
SELECT id::text AS id, lease FROM {s}.executions WHERE status = 'running' AND worker_id = $1::uuid

-- name: release
-- Back to pending, the attempt not counted (a few times in a row at most): see release() in
-- 0006. Only by the worker that holds the claim ($4).
SELECT r::text AS id
FROM {s}.release(ARRAY[$1::uuid], ARRAY[$2::bigint], $4::uuid, $3::float8) AS r

-- name: release_many
-- release for several claims of this worker ($3) at once, due now: $1 their ids, $2 their
-- leases (parallel). A stopping pump's claims that waited for a slot.
SELECT r::text AS id FROM {s}.release($1::uuid[], $2::bigint[], $3::uuid) AS r

-- name: handed_over
-- The claim a notification on {start} says was handed to this worker: believed only if the
-- table says so (running here, first lease, a job or a workflow: 0014), so a forged
-- notification runs nothing.
-- claim_row() in a subquery kept apart, as in pump: this is the pickup's own round trip.
SELECT (t.c).*
FROM (SELECT {s}.claim_row(e) AS c
      FROM {s}.executions e
      WHERE e.id = $1::uuid AND e.worker_id = $2::uuid AND e.status = 'running'
        AND e.lease = 1 AND e.kind IN ('job', 'workflow')
      OFFSET 0) AS t

-- name: cancel_requested
-- Whether a cancel announced on {cancel} is real: asked for in the table, of the claim held.
SELECT cancel_requested FROM {s}.executions
WHERE id = $1::uuid AND lease = $2 AND worker_id = $3::uuid AND status = 'running'

-- name: offer
-- An idle worker offers itself for jobs of its queues until $4 seconds from now (see 0003).
-- Never waiting: an offer an enqueue is taking right now is left to it (its commit hands the
-- job over), and a consumed one is not made again in the same breath.
WITH held AS (
    SELECT worker_id FROM {s}.worker_offers WHERE worker_id = $1::uuid
    FOR UPDATE SKIP LOCKED
), renewed AS (
    UPDATE {s}.worker_offers o
    SET queues = $2::text[], lock_key = $3, expires_at = now() + make_interval(secs => $4::float8)
    FROM held WHERE o.worker_id = held.worker_id
    RETURNING o.worker_id
)
INSERT INTO {s}.worker_offers (worker_id, queues, lock_key, expires_at)
SELECT $1::uuid, $2::text[], $3, now() + make_interval(secs => $4::float8)
WHERE NOT EXISTS (SELECT 1 FROM {s}.worker_offers WHERE worker_id = $1::uuid)
ON CONFLICT (worker_id) DO NOTHING

-- name: hold_offer_lock
-- Taken by a worker's listening session and held while it lives: offers name this key.
SELECT pg_try_advisory_lock($1)

-- name: withdraw
DELETE FROM {s}.worker_offers
WHERE worker_id IN (SELECT worker_id FROM {s}.worker_offers WHERE worker_id = $1::uuid
                    FOR UPDATE SKIP LOCKED)

-- name: fire_due_steps
-- Timers and signal timeouts that came due. The workflow row is locked first, as in every
-- other path that touches a workflow and its steps, so the two cannot deadlock.
WITH due AS (
    SELECT st.workflow_id, st.seq, st.kind
    FROM {s}.workflow_steps st JOIN {s}.executions w ON w.id = st.workflow_id
    WHERE st.status = 'scheduled' AND st.fire_at <= now()
    ORDER BY st.fire_at
    LIMIT 500
    FOR UPDATE OF w SKIP LOCKED
), res AS (
    UPDATE {s}.workflow_steps st
    SET status = CASE WHEN due.kind = 'timer' THEN 'completed' ELSE 'failed' END,
        error = CASE WHEN due.kind = 'signal' THEN jsonb_build_object(
                    'type', 'SignalTimeoutError',
                    'message', 'no signal ' || st.name || ' before the timeout') END,
        resolved_at = now()
    FROM due
    WHERE st.workflow_id = due.workflow_id AND st.seq = due.seq AND st.status = 'scheduled'
    RETURNING st.workflow_id
), r AS (
    SELECT workflow_id, count(*) AS n FROM res GROUP BY workflow_id
)
SELECT (SELECT count(*) FROM r) AS fired,
       (SELECT {s}.wake(array_agg(r.workflow_id), array_agg(r.n)) FROM r) AS notified

-- name: overdue_workflows
SELECT id::text AS id, queue FROM {s}.executions
WHERE deadline <= now() AND status IN ('pending', 'running', 'waiting') AND kind = 'workflow'
ORDER BY deadline
LIMIT 100
FOR UPDATE SKIP LOCKED

-- name: register_worker
INSERT INTO {s}.worker_heartbeats (worker_id, hostname, pid, queues, code_version)
VALUES ($1::uuid, $2, $3, $4::text[], $5)
ON CONFLICT (worker_id) DO UPDATE SET last_heartbeat = now()

-- name: heartbeat
UPDATE {s}.worker_heartbeats SET last_heartbeat = now() WHERE worker_id = $1::uuid
RETURNING worker_id

-- name: deregister_worker
DELETE FROM {s}.worker_heartbeats WHERE worker_id = $1::uuid

-- name: claim_dead_workers
-- Exactly one worker recovers a dead peer: the one whose DELETE removes its row.
DELETE FROM {s}.worker_heartbeats
WHERE last_heartbeat < now() - make_interval(secs => $1::float8) AND worker_id <> $2::uuid
RETURNING worker_id::text AS worker_id, hostname, pid

-- name: orphaned_running
-- Running executions whose worker is gone (recovered above, or never registered).
SELECT e.id::text AS id, e.kind, e.queue, e.lease, e.attempts, e.max_retries, e.cancel_requested
FROM {s}.executions e
WHERE e.status = 'running'
  AND (e.worker_id = ANY($1::uuid[])
       OR NOT EXISTS (SELECT 1 FROM {s}.worker_heartbeats h WHERE h.worker_id = e.worker_id))
ORDER BY e.id
FOR UPDATE SKIP LOCKED

-- name: requeue_workflows
-- The running workflows of dead workers ($1, under claims $2), back to pending to be replayed.
SELECT count(*) AS released FROM {s}.release($1::uuid[], $2::bigint[], NULL)

-- name: workers_alive
SELECT count(*) AS n FROM {s}.worker_heartbeats
WHERE last_heartbeat >= now() - make_interval(secs => $1::float8)

-- name: queue_depths
-- Sampled every heartbeat by every worker, so bounded: each count walks a partial index
-- (executions_claim; executions_deadline for waiting workflows; executions_held;
-- executions_rate_key_pending for throttled ones) and stops at $2, past which the worker asks
-- the planner for an estimate (queue_depth_estimate_* in metrics.sql). Held: waiting for a
-- concurrency key's slot; throttled: due, but held back by the queue's pause, concurrency or
-- rate, or by a rate key with no room (see 0007).
SELECT q.queue,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions p
                              WHERE p.status = 'pending' AND NOT p.held
                                AND p.queue = q.queue
                              ORDER BY p.priority DESC, p.run_at LIMIT $2) a)
           AS pending,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions w
                              WHERE w.deadline IS NOT NULL AND w.status = 'waiting'
                                AND w.queue = q.queue
                              ORDER BY w.deadline LIMIT $2) b)
           AS waiting,
       (SELECT count(*) FROM (SELECT 1 FROM {s}.executions h
                              WHERE h.held AND h.status = 'pending' AND h.queue = q.queue
                              LIMIT $2) c)
           AS held,
       -- A stopped queue throttles all its runnable executions (the claim index, to $2);
       -- else only those of a spent rate key, found by key (executions_rate_key_pending,
       -- 0012): no key spent, nothing to read.
       CASE WHEN f.queue_stopped THEN
           (SELECT count(*) FROM (SELECT 1 FROM {s}.executions t
                                  WHERE t.status = 'pending' AND NOT t.held
                                    AND t.queue = q.queue AND t.run_at <= now()
                                  ORDER BY t.priority DESC, t.run_at LIMIT $2) d)
       ELSE
           (SELECT count(*) FROM (SELECT 1 FROM unnest(f.spent) AS k(rate_key)
                                  CROSS JOIN LATERAL (
                                      SELECT 1 FROM {s}.executions t
                                      WHERE t.rate_key = k.rate_key AND t.queue = q.queue
                                        AND t.status = 'pending' AND NOT t.held
                                        AND t.run_at <= now()
                                      LIMIT $2) r
                                  LIMIT $2) d)
       END AS throttled
FROM unnest($1::text[]) AS q(queue)
CROSS JOIN LATERAL (
    SELECT COALESCE(bool_or(x.paused
                            OR x.concurrency <= (SELECT count(*) FROM {s}.executions r
                                                 WHERE r.queue = x.name
                                                   AND r.status = 'running')
                            OR x.rate_starts <= (SELECT count(*) FROM {s}.rate_starts s
                                                 WHERE s.limiter = 'q:' || x.name
                                                   AND s.at > now() - make_interval(
                                                       secs => x.rate_period))), false)
               AS queue_stopped,
           {s}.spent_rate_keys(now()) AS spent
    FROM (SELECT 1) AS one LEFT JOIN {s}.queues x ON x.name = q.queue
) f

-- name: any_runnable
SELECT EXISTS (
    SELECT 1 FROM unnest($1::text[]) AS q(queue)
    CROSS JOIN LATERAL (SELECT 1 FROM {s}.executions x
                        WHERE x.status = 'pending' AND NOT x.held AND x.queue = q.queue
                          AND x.run_at <= now()
                        ORDER BY x.priority DESC, x.run_at LIMIT 1) c
) AS found

-- name: lead
-- Become or stay the maintenance leader for $2 seconds (see lead() in 0006).
SELECT {s}.lead($1::uuid, $2::float8) AS leads

-- name: resign
SELECT {s}.resign($1::uuid)

-- name: leader
-- The current leader, for operators and tests.
SELECT l.worker_id::text AS worker_id, l.term, l.expires_at
FROM {s}.leader l WHERE l.expires_at > now()

-- name: keep_alive
-- The listening session, probed every poll: a dead connection is found and replaced.
SELECT 1

-- name: results_listening
-- Whether a results listener (results.py) of this database is connected: it names its session
-- after the done channel. A session that merely takes the name costs the workers their
-- announcements, nothing else.
SELECT EXISTS (SELECT 1 FROM pg_stat_get_activity(NULL) a
               WHERE a.application_name = '{done}'
                 AND a.datid = (SELECT oid FROM pg_database
                                WHERE datname = current_database())) AS listening

-- name: db_now
-- The database's time, for the worker's reading of it (workflows.now(); see clock.py).
SELECT now() AS now
