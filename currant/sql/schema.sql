-- Bookkeeping of migrations (currant/schema.py).
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter. A
-- statement starts at "-- name: <name>"; the comment lines after it say why
-- it is shaped the way it is.

-- name: migrations_table
-- Bookkeeping of applied migrations, created by the first migrate(); the
-- caller holds the migration advisory lock.
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migrations_applied
SELECT version FROM {schema}.migrations ORDER BY version

-- name: migration_record
INSERT INTO {schema}.migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: migrations_installed
-- Read-only check used at start-up: a worker whose role cannot run DDL still
-- starts when the schema is current.
SELECT to_regclass(%(table)s) IS NOT NULL

-- name: migration_lock
-- Serialises concurrent migrate() calls (two workers starting at once); the
-- lock ends with the transaction.
SELECT pg_advisory_xact_lock(hashtext(%(key)s))
