-- The opt-in archive of succeeded jobs (0009_archive): turning it on and off,
-- its rotation, and what it holds. The completion that fills it is
-- complete_succeeded_archiving (worker.sql).
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter. A
-- statement starts at "-- name: <name>"; the comment lines after it say why
-- it is shaped the way it is.

-- name: archive_enable
-- One row: the archive is on, with partitions of this many seconds (a new
-- size applies to the partitions created from now on).
INSERT INTO {schema}.archive_layout (partition_seconds) VALUES (%(seconds)s)
ON CONFLICT (only_row) DO UPDATE SET partition_seconds = excluded.partition_seconds

-- name: archive_disable
-- Workers stop archiving at their next rotation; what the archive holds
-- stays readable and still ages out.
DELETE FROM {schema}.archive_layout

-- name: archive_enabled
-- Read with the schema check at a worker's start, so its first completion
-- already goes where the layout says.
SELECT EXISTS (SELECT 1 FROM {schema}.archive_layout)

-- name: archive_rotate
SELECT enabled, created, dropped, purged FROM {schema}.archive_rotate(%(keep)s, %(ahead)s)

-- name: archive_status
-- The layout, and each partition with its bounds, its rows as the planner's
-- statistics estimate them (-1 before the first ANALYZE: a count would read
-- every row) and its size on disk.
SELECT l.partition_seconds, l.enabled_at, c.relname, pg_get_expr(c.relpartbound, c.oid),
       c.reltuples::bigint, pg_total_relation_size(c.oid)
FROM (SELECT 1) AS one
LEFT JOIN {schema}.archive_layout l ON true
LEFT JOIN pg_inherits i ON i.inhparent = '{schema}.archive'::regclass
LEFT JOIN pg_class c ON c.oid = i.inhrelid
ORDER BY c.relname
