-- What `workflows migrate` runs around the numbered migrations (migrate.py). Format and
-- placeholders as in client.sql.

-- name: migrate_lock
-- Session-level: a second migrate waits here, then finds nothing left to do.
SELECT pg_advisory_lock($1)

-- name: migrate_unlock
SELECT pg_advisory_unlock($1)

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {s}

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_versions
SELECT version FROM {s}.schema_migrations

-- name: record_migration
INSERT INTO {s}.schema_migrations (version, name) VALUES ($1, $2)
