-- Retention (migration 0009): pruning finished executions, run by a store's control() in a
-- transaction of its own. Format and placeholders as in client.sql.

-- name: prune
-- One batch: at most $4 roots (NULL: all, for a dry run) with their trees; each status kept
-- for its seconds ($1 completed, $2 failed, $3 cancelled; NULL: not pruned); $5: a dry run.
SELECT roots, executions, steps, signals
FROM {s}.prune(make_interval(secs => $1::float8), make_interval(secs => $2::float8),
               make_interval(secs => $3::float8), $4::int, $5::bool)
