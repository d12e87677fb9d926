-- Waiting for results (workflows_postgres.results). Format and placeholders as in client.sql.

-- name: finished_among
-- Which of the executions waited on have ended: one query per tick for every waiter of a
-- process, since an end's notification is only a hint (lost while the listener reconnects,
-- or never sent by whoever finished a row some other way). Primary-key lookups.
SELECT id::text AS id FROM {s}.executions
WHERE id = ANY($1::uuid[]) AND status IN ('completed', 'failed', 'cancelled')

-- name: statuses_among
-- The first look of many waiters that began at once (one query, not one per waiter): the
-- status of each id that exists; an id with no row is not found.
SELECT id::text AS id, status FROM {s}.executions WHERE id = ANY($1::uuid[])
