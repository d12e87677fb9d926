-- Retrying by hand (migration 0010): workflows.retries and `workflows retry`, each statement
-- run by a store's control() in a transaction of its own. Format and placeholders as in
-- client.sql.

-- name: retry_execution
-- One execution ($1): see retry() in 0010 for the outcomes.
SELECT r.id, r.kind, r.status, r.attempts, r.outcome, r.detail FROM {s}.retry($1::uuid) r

-- name: retry_candidates
-- One batch of the bulk retry's matches, without retrying them (--dry-run): the failed or
-- cancelled ($2) roots of queue $1, function $3 if given, ended in [$4, $5), after the
-- cursor ($6 ended at, $7 id) in the order they ended, at most $8. No parameter is a
-- NULL tested in the WHERE (the absent ones are the infinities): every bound, the cursor's
-- too, is a condition on executions_retryable, so each batch starts where the last ended
-- instead of walking the queue's failures from the first again.
SELECT e.id::text AS id, e.kind, e.name, e.queue, e.status, e.attempts,
       e.finished_at, e.error::text AS error
FROM {s}.executions e
WHERE e.queue = $1::text AND e.status = $2::text AND e.parent_id IS NULL
  AND e.status IN ('failed', 'cancelled')
  AND ($3::text IS NULL OR e.name = $3::text)
  AND e.finished_at >= COALESCE($4::timestamptz, '-infinity')
  AND e.finished_at < COALESCE($5::timestamptz, 'infinity')
  AND (e.finished_at, e.id) > (COALESCE($6::timestamptz, '-infinity'),
                               COALESCE($7::uuid, '00000000-0000-0000-0000-000000000000'))
ORDER BY e.finished_at, e.id
LIMIT $8::int

-- name: retry_batch
-- The same batch (parameters as retry_candidates), each retried by retry() in the order it
-- ended: one lock at a time, so two bulk retries over the same rows never wait for each
-- other crosswise, and one retried by the other meanwhile comes back 'not_final'. Each row:
-- where the cursor goes next (finished_at, id) and the retry's outcome.
WITH c AS MATERIALIZED (
    SELECT e.id, e.name, e.queue, e.finished_at
    FROM {s}.executions e
    WHERE e.queue = $1::text AND e.status = $2::text AND e.parent_id IS NULL
      AND e.status IN ('failed', 'cancelled')
      AND ($3::text IS NULL OR e.name = $3::text)
      AND e.finished_at >= COALESCE($4::timestamptz, '-infinity')
      AND e.finished_at < COALESCE($5::timestamptz, 'infinity')
      AND (e.finished_at, e.id) > (COALESCE($6::timestamptz, '-infinity'),
                                   COALESCE($7::uuid, '00000000-0000-0000-0000-000000000000'))
    ORDER BY e.finished_at, e.id
    LIMIT $8::int
)
SELECT c.id::text AS id, r.kind, c.name, c.queue, r.status, r.attempts, c.finished_at,
       r.outcome, r.detail
FROM c CROSS JOIN LATERAL {s}.retry(c.id) r
ORDER BY c.finished_at, c.id
