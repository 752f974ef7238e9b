-- Reading and steering jobs: the App's get_job, cancel, retry, stats,
-- list_jobs and purge, and the admin CLI.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter. A
-- statement starts at "-- name: <name>"; the comment lines after it say why
-- it is shaped the way it is.

-- name: get_job
-- Live or archived (jobs_all, 0009_archive): a primary-key probe of jobs and
-- one of archive_id_idx per archive partition.
SELECT id, task, queue, state::text, attempts, max_attempts, priority, result, errors,
       enqueued_at, started_at, finished_at, run_at, cancel_requested, unique_key,
       rescues, worker_id, {schema}.clock() AS db_now, payload, progress
FROM {schema}.jobs_all WHERE id = %(id)s

-- name: cancel
-- Waiting, queued, scheduled or retrying jobs are cancelled on the spot (a
-- waiting one's dependents follow, by the trigger of 0006_flow); a running job
-- is flagged and its worker is told by NOTIFY (and by its next heartbeat).
-- Reports the state before the call so the caller can say what happened.
WITH old AS (
    SELECT id, state FROM {schema}.jobs WHERE id = %(id)s FOR UPDATE
), upd AS (
    UPDATE {schema}.jobs j
    SET state = CASE WHEN old.state = 'running' THEN j.state ELSE 'cancelled' END::{schema}.job_state,
        cancel_requested = true,
        finished_at = CASE WHEN old.state = 'running' THEN j.finished_at ELSE {schema}.clock() END
    FROM old
    WHERE j.id = old.id AND old.state IN ('waiting', 'queued', 'scheduled', 'retrying', 'running')
    RETURNING j.id
), woken AS (
    SELECT pg_catalog.pg_notify(%(channel)s, 'c:' || upd.id) FROM upd JOIN old USING (id) WHERE old.state = 'running'
)
SELECT old.state::text, (SELECT count(*) FROM upd) AS changed, (SELECT count(*) FROM woken) FROM old

-- name: retry
-- A failed or cancelled job goes back to the queue with at least one more
-- attempt (a job-level max_attempts it had not used up is kept); its error
-- history stays. Not while another live job holds its unique key.
WITH upd AS (
    UPDATE {schema}.jobs j
    SET state = 'queued', run_at = {schema}.clock(), finished_at = NULL, worker_id = NULL,
        cancel_requested = false, rescues = 0,
        max_attempts = greatest(coalesce(j.max_attempts, 0), j.attempts + 1)
    WHERE j.id = %(id)s AND j.state IN ('failed', 'cancelled')
      AND NOT EXISTS (SELECT 1 FROM {schema}.jobs k
                      WHERE k.unique_key = j.unique_key AND k.id <> j.id
                        AND k.state IN ('queued', 'scheduled', 'running', 'retrying'))
    RETURNING j.id, j.queue
), woken AS (
    SELECT pg_catalog.pg_notify(%(channel)s, 'r:' || upd.queue) FROM upd
)
SELECT upd.id, (SELECT count(*) FROM woken) FROM upd

-- name: stats
-- Counts per queue and state, and the age of the oldest job ready to run;
-- archived jobs (jobs_all) count as the succeeded jobs they are.
SELECT queue, state::text, count(*) AS jobs,
       extract(epoch FROM {schema}.clock() - min(run_at) FILTER (WHERE state = 'queued')) AS oldest_queued_age
FROM {schema}.jobs_all
GROUP BY queue, state
ORDER BY queue, state

-- name: list_jobs
-- The newest jobs in one state, optionally of one queue and task. Newest
-- first by primary key: LIMIT stops the walk early (over jobs_all, a merge of
-- the id indexes of jobs and of each archive partition).
SELECT id, task, queue, state::text, attempts, max_attempts, enqueued_at, run_at, finished_at,
       errors -> -1 ->> 'error' AS last_error
FROM {schema}.jobs_all
WHERE state = %(state)s::{schema}.job_state
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: purge
-- Admin purge: delete finished (or, explicitly, queued) jobs of a state,
-- optionally of one queue, optionally only older than a number of seconds;
-- succeeded ones from the archive too (0009_archive). Returns the count.
WITH archived AS (
    DELETE FROM {schema}.archive
    WHERE %(state)s::text = 'succeeded'
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)
      AND (%(older_than)s::double precision IS NULL
           OR finished_at < {schema}.clock() - make_interval(secs => %(older_than)s))
    RETURNING 1
), live AS (
    DELETE FROM {schema}.jobs
    WHERE state = %(state)s::{schema}.job_state
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)
      AND (%(older_than)s::double precision IS NULL
           OR coalesce(finished_at, enqueued_at) < {schema}.clock() - make_interval(secs => %(older_than)s))
    RETURNING 1
)
SELECT (SELECT count(*) FROM archived) + (SELECT count(*) FROM live)
