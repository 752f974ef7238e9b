-- The dashboard's statements (currant.dashboard), loaded with every other
-- .sql file beside this one (names are unique across files). The dashboard's rule is that no page
-- costs more than ~100 ms of server time with a million jobs in the table, so
-- every statement here either reads a small table (workers, activity,
-- id_marks, periodic, worker_deaths, the statistics views) or walks one of the
-- jobs table's existing indexes and stops early (a LIMIT, a capped count).
-- None needs an index of its own: an index on jobs is paid by every enqueue
-- and every claim. Counts that may be large are capped by %(cap)s and shown as
-- "at least" when the cap is reached.

-- name: dash_waiting_counts
-- Jobs waiting, per queue and state, capped. Queued jobs: the queues that
-- have any are found by a loose walk of jobs_claim_idx (queue, id), one probe
-- per queue instead of one row per job, then each queue's count stops at the
-- cap (an index-only walk of that queue's part of the index). The oldest
-- ready job's age is read from the 100 next in line (FIFO by id), not from all
-- of them. Scheduled and retrying jobs come from jobs_due_idx (run_at), which
-- holds only them; that index has no queue, so their count reads the rows and
-- stops at the cap over both states together (their "capped" then says so).
-- Jobs of limited tasks (in jobs_limited_idx, not jobs_claim_idx) and jobs
-- waiting for parents (jobs_waiting_idx) are counted like the due ones: rows
-- read, up to the cap. A queue's queued jobs may come in two rows (the
-- caller adds them up).
WITH RECURSIVE queues AS (
    (SELECT queue FROM {schema}.jobs WHERE state = 'queued' AND limit_key IS NULL ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM {schema}.jobs j WHERE j.state = 'queued' AND j.limit_key IS NULL
              AND j.queue > queues.queue
            ORDER BY j.queue LIMIT 1)
    FROM queues WHERE queues.queue IS NOT NULL
), due AS (
    SELECT queue, state FROM {schema}.jobs WHERE state IN ('scheduled', 'retrying') LIMIT %(cap)s
), limited AS (
    SELECT queue, run_at FROM {schema}.jobs WHERE state = 'queued' AND limit_key IS NOT NULL LIMIT %(cap)s
), waiting AS (
    SELECT queue FROM {schema}.jobs WHERE state = 'waiting' LIMIT %(cap)s
)
SELECT q.queue, 'queued' AS state, n.jobs, n.jobs >= %(cap)s AS capped,
       extract(epoch FROM {schema}.clock() - h.oldest)::double precision AS oldest_age
FROM queues q
CROSS JOIN LATERAL (SELECT count(*) AS jobs FROM (SELECT 1 FROM {schema}.jobs
                    WHERE state = 'queued' AND limit_key IS NULL AND queue = q.queue LIMIT %(cap)s) AS c) AS n
CROSS JOIN LATERAL (SELECT min(run_at) AS oldest FROM (SELECT run_at FROM {schema}.jobs
                    WHERE state = 'queued' AND limit_key IS NULL AND queue >= q.queue AND queue <= q.queue
                    ORDER BY queue, id LIMIT 100) AS head) AS h
WHERE q.queue IS NOT NULL
UNION ALL
SELECT queue, state::text, count(*), (SELECT count(*) FROM due) >= %(cap)s, NULL
FROM due GROUP BY queue, state
UNION ALL
SELECT queue, 'queued', count(*), (SELECT count(*) FROM limited) >= %(cap)s,
       extract(epoch FROM {schema}.clock() - min(run_at))::double precision
FROM limited GROUP BY queue
UNION ALL
SELECT queue, 'waiting', count(*), (SELECT count(*) FROM waiting) >= %(cap)s, NULL
FROM waiting GROUP BY queue

-- name: dash_finished_totals
-- Failed and cancelled jobs still in the table (succeeded ones are counted by
-- the activity report instead): an index-only walk of jobs_finished_idx,
-- whose leading column is the state, capped.
SELECT 'failed' AS state, count(*) AS jobs FROM (
    SELECT 1 FROM {schema}.jobs WHERE state = 'failed' LIMIT %(cap)s) AS f
UNION ALL
SELECT 'cancelled', count(*) FROM (
    SELECT 1 FROM {schema}.jobs WHERE state = 'cancelled' LIMIT %(cap)s) AS c

-- name: dash_activity
-- What workers finished, per queue and outcome, over the last hour and over
-- the last five minutes (for jobs/s out): a range of the activity table's
-- primary key (minute first), a few hundred rows at most. The five-minute
-- window starts at a minute boundary; the caller divides by its real length.
SELECT queue, outcome, sum(jobs)::bigint AS hour,
       (sum(jobs) FILTER (WHERE minute >= date_trunc('minute', {schema}.clock()) - interval '4 minutes'))::bigint
           AS recent,
       extract(epoch FROM {schema}.clock() - (date_trunc('minute', {schema}.clock()) - interval '4 minutes'))
           ::double precision AS recent_seconds
FROM {schema}.activity
WHERE minute >= date_trunc('minute', {schema}.clock()) - interval '59 minutes'
GROUP BY queue, outcome
ORDER BY queue, outcome

-- name: dash_throughput
-- The chart: per minute of the last hour, jobs finished and jobs that failed
-- for good (activity), and the id sequence's mark (id_marks), whose
-- differences are the jobs enqueued. One row per minute, minutes without data
-- included (the chart shows gaps as zero). The mark before the hour is
-- included so the first minute has a difference.
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', {schema}.clock()) - interval '59 minutes',
                           date_trunc('minute', {schema}.clock()), interval '1 minute') AS minute
), done AS (
    SELECT minute, sum(jobs) FILTER (WHERE outcome IN ('succeeded', 'failed', 'cancelled')) AS finished,
           sum(jobs) FILTER (WHERE outcome = 'failed') AS failed
    FROM {schema}.activity
    WHERE minute >= date_trunc('minute', {schema}.clock()) - interval '59 minutes'
    GROUP BY minute
)
SELECT m.minute, coalesce(d.finished, 0)::bigint, coalesce(d.failed, 0)::bigint,
       (SELECT last_id FROM {schema}.id_marks k WHERE k.minute <= m.minute ORDER BY k.minute DESC LIMIT 1)
FROM minutes m LEFT JOIN done d USING (minute)
UNION ALL
SELECT NULL, NULL, NULL, (SELECT last_id FROM {schema}.id_marks
                          WHERE minute < date_trunc('minute', {schema}.clock()) - interval '59 minutes'
                          ORDER BY minute DESC LIMIT 1)
ORDER BY 1 NULLS FIRST

-- name: dash_pulse
-- What the live view watches besides NOTIFY (completions send none): the id
-- sequence's position (jobs enqueued), what workers reported this minute and
-- the last (finished jobs), and the live workers with the jobs they hold.
-- Small tables and a sequence only; one statement every couple of seconds per
-- dashboard process, and only while someone watches.
SELECT (SELECT last_value FROM {schema}.jobs_id_seq),
       (SELECT coalesce(sum(jobs), 0)::bigint FROM {schema}.activity
        WHERE minute >= date_trunc('minute', {schema}.clock()) - interval '1 minute'),
       (SELECT count(*) FROM {schema}.workers),
       (SELECT coalesce(sum(running), 0)::bigint FROM {schema}.workers),
       (SELECT count(*) FROM {schema}.worker_deaths),
       {schema}.clock()

-- name: dash_jobs
-- One page of the job list, newest first, keyset-paginated on id (never
-- OFFSET). The state, queue and id bound narrow the walk through an index:
-- the primary key backwards, or the state's partial index, as the planner
-- finds cheaper. The task and last-error filters have no index (one would tax
-- every enqueue), so they look only at the newest %(window)s jobs that pass
-- the indexed filters: "candidates" is bounded, and the page says which ids it
-- searched (scanned, lowest) so the next page can go on from there.
-- Archived jobs are listed as the succeeded jobs they are (jobs_all).
WITH candidates AS (
    SELECT id, task, queue, state, attempts, max_attempts, enqueued_at, run_at, started_at, finished_at, errors
    FROM {schema}.jobs_all
    WHERE (%(state)s::text IS NULL OR state = %(state)s::{schema}.job_state)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
    ORDER BY id DESC
    LIMIT %(window)s
), matched AS (
    SELECT * FROM candidates
    WHERE (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    ORDER BY id DESC
    LIMIT %(limit)s
), scan AS (
    SELECT count(*) AS scanned, min(id) AS lowest FROM candidates
)
SELECT scan.scanned, scan.lowest, m.id, m.task, m.queue, m.state::text, m.attempts, m.max_attempts,
       m.enqueued_at, m.run_at, m.started_at, m.finished_at,
       left(split_part(m.errors -> -1 ->> 'error', E'\n', 1), 300) AS last_error,
       {schema}.clock() AS db_now
FROM scan LEFT JOIN matched m ON true
ORDER BY m.id DESC

-- name: dash_bulk_count
-- How many jobs a bulk action would touch, for its confirmation page, capped
-- at %(cap)s (the page then says "at least"; the action itself has no cap).
-- One arm per state, each naming its state as a constant so the planner can
-- walk that state's partial index (jobs_claim_idx and jobs_limited_idx,
-- jobs_waiting_idx, jobs_due_idx, jobs_finished_idx); an arm whose state is
-- not asked for is skipped by a one-time filter.
SELECT count(*) FROM (
    SELECT 1 FROM {schema}.jobs
    WHERE 'queued' = ANY(%(states)s::text[]) AND state = 'queued' AND limit_key IS NULL
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    UNION ALL
    SELECT 1 FROM {schema}.jobs
    WHERE 'queued' = ANY(%(states)s::text[]) AND state = 'queued' AND limit_key IS NOT NULL
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    UNION ALL
    SELECT 1 FROM {schema}.jobs
    WHERE 'waiting' = ANY(%(states)s::text[]) AND state = 'waiting'
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    UNION ALL
    SELECT 1 FROM {schema}.jobs
    WHERE state IN ('scheduled', 'retrying') AND state::text = ANY(%(states)s::text[])
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    UNION ALL
    SELECT 1 FROM {schema}.jobs
    WHERE state IN ('failed', 'cancelled') AND state::text = ANY(%(states)s::text[])
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    LIMIT %(cap)s
) AS matching

-- name: dash_bulk_retry
-- One batch of a bulk retry: the next %(batch)s failed (or cancelled) jobs
-- after id %(after)s that match the filter, each changed exactly as the
-- single "retry" statement changes one (queued now, at least one more
-- attempt, errors kept; not while another live job holds its unique key).
-- Batches in id order, each its own transaction, so a big retry never holds
-- many locks at once and every job is visited once. SKIP LOCKED: a job
-- someone else is changing is left alone. Wakes each queue that got jobs.
WITH batch AS (
    SELECT id FROM {schema}.jobs
    WHERE state = ANY(%(states)s::{schema}.job_state[]) AND id > %(after)s
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE {schema}.jobs j
    SET state = 'queued', run_at = {schema}.clock(), finished_at = NULL, worker_id = NULL,
        cancel_requested = false, rescues = 0,
        max_attempts = greatest(coalesce(j.max_attempts, 0), j.attempts + 1)
    FROM batch
    WHERE j.id = batch.id
      AND NOT EXISTS (SELECT 1 FROM {schema}.jobs k
                      WHERE k.unique_key = j.unique_key AND k.id <> j.id
                        AND k.state IN ('queued', 'scheduled', 'running', 'retrying'))
    RETURNING j.id, j.queue
), woken AS (
    SELECT pg_catalog.pg_notify(%(channel)s::text, 'r:' || q.queue) FROM (SELECT DISTINCT queue FROM upd) AS q
)
SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM upd), (SELECT max(id) FROM batch),
       (SELECT count(*) FROM woken)

-- name: dash_bulk_cancel
-- One batch of a bulk cancel of jobs still to run (waiting, queued, scheduled, retrying),
-- in id order like dash_bulk_retry: each job ends as the single "cancel"
-- statement leaves a waiting one. A job a worker claimed meanwhile is left
-- alone: FOR UPDATE re-reads a row changed since the snapshot and checks the
-- state again, and the claim skips rows locked here.
WITH batch AS (
    SELECT id FROM {schema}.jobs
    WHERE state = ANY(%(states)s::{schema}.job_state[]) AND id > %(after)s
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(pattern)s::text IS NULL OR (errors -> -1 ->> 'error') ILIKE %(pattern)s::text)
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE {schema}.jobs j
    SET state = 'cancelled', cancel_requested = true, finished_at = {schema}.clock()
    FROM batch
    WHERE j.id = batch.id
    RETURNING j.id
)
SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM upd), (SELECT max(id) FROM batch), 0

-- name: dash_worker_deaths
-- Workers declared dead in the last day (maintain() writes them, 0004), newest
-- first, with what was taken back from each.
SELECT worker_id, hostname, pid, queues, concurrency, running, started_at, last_seen, declared_dead_at,
       rescued, poisoned, job_ids
FROM {schema}.worker_deaths
ORDER BY declared_dead_at DESC
LIMIT %(limit)s

-- name: dash_worker
-- The worker a job page names: alive, or dead in the last day, or unknown.
SELECT 'alive' AS status, hostname, pid, last_seen FROM {schema}.workers WHERE id = %(id)s
UNION ALL
SELECT 'dead', hostname, pid, last_seen FROM {schema}.worker_deaths WHERE worker_id = %(id)s

-- name: dash_periodic
-- Every schedule workers have registered, with its last tick (the next is
-- computed from the cron expression by the caller).
SELECT name, schedule, last_tick, {schema}.clock() AS db_now FROM {schema}.periodic ORDER BY name

-- name: dash_health_table
-- The jobs table's size and its vacuum state, from the statistics views
-- (no scan). The relation is named by its validated, quoted schema.
SELECT pg_total_relation_size(s.relid), pg_relation_size(s.relid), s.n_live_tup, s.n_dead_tup,
       s.last_autovacuum, s.last_vacuum, s.autovacuum_count, s.last_autoanalyze, s.n_mod_since_analyze
FROM pg_catalog.pg_stat_user_tables s
WHERE s.relid = '{schema}.jobs'::regclass

-- name: dash_health_xmin
-- What holds vacuum back on the jobs table: the oldest snapshot that counts
-- for it. Since PostgreSQL 14 a user table's horizon takes the sessions of its
-- own database only, so sessions are those of this database (a walsender,
-- which holds every database back, has none and shows as a slot); then
-- replication slots whose xmin is set (a standby's hot_standby_feedback; a
-- slot's catalog_xmin holds only system catalogs) and prepared transactions
-- of this database. Only the first 300 characters of the
-- statement are read.
SELECT 'session' AS kind, a.pid, age(a.backend_xmin) AS xmin_age, a.datname::text, a.usename::text,
       a.application_name, a.state, extract(epoch FROM now() - a.xact_start)::double precision AS xact_seconds,
       left(a.query, 300) AS query
FROM pg_catalog.pg_stat_activity a
WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid() AND a.datname = current_database()
UNION ALL
SELECT 'replication slot', NULL, age(s.xmin), s.database::text, NULL,
       s.slot_name::text, CASE WHEN s.active THEN 'active' ELSE 'inactive' END, NULL, NULL
FROM pg_catalog.pg_replication_slots s
WHERE s.xmin IS NOT NULL AND (s.database IS NULL OR s.database = current_database())
UNION ALL
SELECT 'prepared transaction', NULL, age(p.transaction), p.database::text, p.owner::text, p.gid, 'prepared',
       extract(epoch FROM now() - p.prepared)::double precision, NULL
FROM pg_catalog.pg_prepared_xacts p
WHERE p.database = current_database()
ORDER BY xmin_age DESC NULLS LAST
LIMIT 1

-- name: dash_health_server
-- NOTIFY queue usage (a listener that stops reading fills it; at 100 % every
-- NOTIFY, so every enqueue, fails) and connections in use against the limit.
SELECT pg_catalog.pg_notification_queue_usage(),
       (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::integer,
       current_setting('superuser_reserved_connections')::integer
