-- The queue gauges' index (workflows_worker/queue_gauges.py, sql/worker.sql queue_depths).
--
-- executions_rate_key_pending: the runnable executions of a queue held back by a rate key with
-- no room (the `throttled` depth) are found by key, not by walking the whole backlog in claim
-- order and filtering on rate_key: with no key spent, that walk read every pending row of the
-- queue on every sample (4.3 s per worker every heartbeat on a backlog of a million). Partial:
-- executions without a rate key never enter it, so only rate-limited enqueues and claims pay.
CREATE INDEX executions_rate_key_pending ON {s}.executions (rate_key, queue, run_at)
    WHERE rate_key IS NOT NULL AND status = 'pending' AND NOT held;
