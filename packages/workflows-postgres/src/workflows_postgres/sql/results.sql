-- Waiting for results (workflows_postgres.results). Format and placeholders as in client.sql.

-- name: finished_among
-- Which of the executions waited on have ended: one query per tick for every waiter of a
-- process, since an end's notification is only a hint (lost while the listener reconnects,
-- or never sent by whoever finished a row some other way). Primary-key lookups.
SELECT id::text AS id FROM {s}.executions
WHERE id = ANY($1::uuid[]) AND status IN ('completed', 'failed', 'cancelled')
