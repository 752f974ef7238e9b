-- The queue's health as numbers, for `python -m currant metrics` (one scraper
-- per cluster) and the dashboard's /metrics. Every statement here must stay
-- cheap on a table of a million jobs, most of them finished: each reads a
-- partial index whose size is the number of jobs in the states it counts
-- (queued, waiting, failed), a handful of worker rows, or the statistics
-- views; none reads the finished jobs that make up most of the table.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter.

-- name: metrics_waiting_jobs
-- Jobs still to run, and those that failed or were cancelled, by queue and
-- state. One part per partial index, because a partial index serves only a
-- query whose WHERE implies its predicate: queued jobs from jobs_claim_idx
-- and (those of limited tasks) jobs_limited_idx, waiting ones from
-- jobs_waiting_idx, scheduled and retrying from jobs_due_idx, failed and
-- cancelled (few, kept a week) from jobs_finished_idx. Succeeded jobs are not
-- counted here (the workers count them: currant_jobs_finished_total). A
-- queue's queued jobs may come in two rows: the caller adds them up.
SELECT queue, 'queued', count(*) FROM {schema}.jobs WHERE state = 'queued' AND limit_key IS NULL GROUP BY queue
UNION ALL
SELECT queue, 'queued', count(*) FROM {schema}.jobs WHERE state = 'queued' AND limit_key IS NOT NULL GROUP BY queue
UNION ALL
SELECT queue, 'waiting', count(*) FROM {schema}.jobs WHERE state = 'waiting' GROUP BY queue
UNION ALL
SELECT queue, state::text, count(*) FROM {schema}.jobs
WHERE state IN ('scheduled', 'retrying') GROUP BY queue, state
UNION ALL
SELECT queue, state::text, count(*) FROM {schema}.jobs
WHERE state IN ('failed', 'cancelled') GROUP BY queue, state

-- name: metrics_oldest_ready
-- Per queue, how long the first job in claim order has been ready: the
-- claim index gives the first row of each queue without reading the rest.
-- Jobs of limited tasks (held back by their limits, maybe) count too, read
-- from up to 10,000 of them: a bound on the scrape, not on their number.
SELECT queue, extract(epoch FROM {schema}.clock() - min(run_at))::double precision
FROM (
    SELECT * FROM (
        SELECT DISTINCT ON (queue) queue, run_at
        FROM {schema}.jobs WHERE state = 'queued' AND limit_key IS NULL
        ORDER BY queue, id
    ) AS first_ready
    UNION ALL
    SELECT * FROM (
        SELECT queue, run_at FROM {schema}.jobs WHERE state = 'queued' AND limit_key IS NOT NULL LIMIT 10000
    ) AS limited
) AS ready
GROUP BY queue

-- name: metrics_workers
-- The live workers and what their last heartbeats said they were running.
SELECT count(*), coalesce(sum(running), 0)::bigint FROM {schema}.workers

-- name: metrics_table
-- The jobs table as PostgreSQL's statistics see it: size on disk (with its
-- indexes and TOAST) and dead tuples waiting for vacuum; and the archive's
-- size (0009_archive), the sum of its partitions' (a partitioned parent has
-- no storage of its own), 0 when it is off.
SELECT pg_total_relation_size(%(table)s::regclass),
       coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %(table)s::regclass), 0),
       (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits
        WHERE inhparent = %(archive)s::regclass)

-- name: metrics_server
-- What quietly ruins a Postgres queue: the oldest transaction holding back
-- vacuum (its age), and how full the NOTIFY queue is.
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::double precision,
       pg_notification_queue_usage()
FROM pg_stat_activity
WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
