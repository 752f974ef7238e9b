-- Enqueue: one job in one round trip, many by binary COPY, and the wake-up.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter. A
-- statement starts at "-- name: <name>"; the comment lines after it say why
-- it is shaped the way it is.

-- name: enqueue_one
-- One round trip for a single job: insert, and wake workers of that queue in
-- the same statement (delivered at the caller's COMMIT, merged per queue and
-- transaction by PostgreSQL). run_at is computed with the database clock. With
-- a unique_key, a live duplicate is not inserted and its id is returned
-- instead (inserted = false); when the conflicting row is not yet visible to
-- this snapshot nothing comes back and the caller retries. A job that will
-- wait for parents goes in as 'waiting' and wakes nobody: the depend
-- statement that follows it in the same transaction links and releases it.
-- limit_key: NULL, or the job's key under its task's limits (0007_limits).
WITH args AS (
    SELECT coalesce(%(run_at)s::timestamptz, {schema}.clock() + make_interval(secs => %(delay)s::double precision)) AS run_at
), ins AS (
    INSERT INTO {schema}.jobs (queue, task, payload, priority, max_attempts, run_at, state, unique_key, limit_key)
    SELECT %(queue)s::text, %(task)s::text, %(payload)s::bytea, %(priority)s::smallint, %(max_attempts)s::integer, args.run_at,
           CASE WHEN %(waiting)s::boolean THEN 'waiting'
                WHEN args.run_at > {schema}.clock() THEN 'scheduled' ELSE 'queued' END::{schema}.job_state,
           %(unique_key)s::text, %(limit_key)s::text
    FROM args
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('queued', 'scheduled', 'running', 'retrying')
        DO NOTHING
    RETURNING id, state, run_at
), woken AS (
    SELECT pg_catalog.pg_notify(%(channel)s::text, CASE WHEN ins.state = 'queued' THEN 'r:' || %(queue)s::text
                                       ELSE 'd:' || extract(epoch FROM ins.run_at)::text || ':' || %(queue)s::text END)
    FROM ins WHERE ins.state <> 'waiting'
)
SELECT ins.id, true AS inserted, (SELECT count(*) FROM woken) AS notified FROM ins
UNION ALL
SELECT j.id, false, 0 FROM {schema}.jobs j
WHERE %(unique_key)s::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ins)
  AND j.unique_key = %(unique_key)s::text
  AND j.state IN ('queued', 'scheduled', 'running', 'retrying')

-- name: bulk_start
-- A bulk batch's ids are drawn by its COPY itself: the rows leave the id out
-- and the column's identity default takes one nextval per row, in stream
-- order. Drawing them up front instead ("nextval() FROM generate_series",
-- below) cost 4,092 server instructions per id against about 2,000 for the
-- default, and a round trip in which the server alone works (BENCHMARKS.md,
-- issue 16). This draws one value first: the batch's ids all come after it.
-- It also reads the database clock once: clock() is the transaction's
-- start, the same instant for every row.
SELECT {schema}.clock() AS db_now, nextval('{schema}.jobs_id_seq') AS before

-- name: copy_jobs
-- The binary COPY stream is built by the core (write_job_rows, rows without
-- an id); the column order here must match it.
COPY {schema}.jobs (queue, task, payload, priority, max_attempts, run_at, state, unique_key)
FROM STDIN (FORMAT BINARY)

-- name: bulk_ids
-- The ids the batch's COPY drew. currval() is this session's last nextval:
-- the batch's last row. When nothing else drew from the sequence meanwhile
-- the batch holds every value in (before, last], and the caller makes the
-- list itself (nothing comes back). Otherwise (a concurrent enqueue took
-- values in between) they are read back: the rows in that range that one
-- COPY, in one (sub)transaction, wrote: those with the last row's xmin.
SELECT last.id AS last,
       CASE WHEN last.id - %(before)s::bigint <> %(n)s::bigint THEN
           ARRAY(SELECT j.id FROM {schema}.jobs j
                 WHERE j.id > %(before)s::bigint AND j.id <= last.id
                   AND j.xmin = (SELECT mine.xmin FROM {schema}.jobs mine WHERE mine.id = last.id)
                 ORDER BY j.id)
       END AS ids
FROM (SELECT currval('{schema}.jobs_id_seq') AS id) AS last

-- name: reserve_ids
-- Bulk enqueue with unique keys stages its rows (create_stage, below) and
-- needs their ids before they go into jobs, so it reserves them from the
-- identity sequence first, and reads the database clock once. The sequence
-- is named, not looked up: pg_get_serial_sequence() per row made this
-- statement eight times slower.
SELECT {schema}.clock() AS db_now,
       ARRAY(SELECT nextval('{schema}.jobs_id_seq')
             FROM generate_series(1, %(n)s)) AS ids

-- name: create_stage
-- Bulk enqueue with unique keys cannot COPY straight into jobs (one duplicate
-- would abort the whole COPY), so it stages the rows in a temporary table that
-- empties itself at commit.
CREATE TEMPORARY TABLE IF NOT EXISTS currant_stage (
    id bigint, queue text, task text, payload bytea, priority smallint,
    max_attempts integer, run_at timestamptz, state text, unique_key text
) ON COMMIT DELETE ROWS

-- name: clear_stage
-- The stage empties at commit; this clears it for a second bulk enqueue in
-- the same transaction.
DELETE FROM currant_stage

-- name: copy_stage
COPY currant_stage (id, queue, task, payload, priority, max_attempts, run_at, state, unique_key)
FROM STDIN (FORMAT BINARY)

-- name: insert_from_stage
-- Inserts staged rows, first occurrence of a unique key wins within the
-- batch; returns the reserved id of every row that went in. Duplicates of
-- live jobs are skipped by the partial unique index, race-free. The bare
-- ON CONFLICT also skips rows a previous pass already inserted (same id), so
-- the caller may run it again after a holder of a key finished.
-- Rows go in by unique_key, not by id: an insert that meets a key another
-- uncommitted bulk enqueue just wrote waits for it, and two batches taking
-- overlapping keys in different orders would wait for each other (a
-- deadlock). In one global order, the one that waits never holds a key the
-- other still needs. Ids were reserved up front, so this order changes
-- neither the ids nor their FIFO order.
INSERT INTO {schema}.jobs (id, queue, task, payload, priority, max_attempts, run_at, state, unique_key)
SELECT id, queue, task, payload, priority, max_attempts, run_at, state::{schema}.job_state, unique_key
FROM (
    SELECT * FROM currant_stage WHERE unique_key IS NULL
    UNION ALL
    SELECT * FROM (SELECT DISTINCT ON (unique_key) * FROM currant_stage
                   WHERE unique_key IS NOT NULL ORDER BY unique_key, id) AS first_of_each_key
) AS s
ORDER BY unique_key NULLS FIRST, id
ON CONFLICT DO NOTHING
RETURNING id

-- name: resolve_unique
-- For staged rows that were not inserted: the id of the live job holding
-- their key. Fewer rows than keys means a holder finished or is not visible
-- yet; the caller retries the batch.
SELECT DISTINCT ON (j.unique_key) j.unique_key, j.id
FROM {schema}.jobs j
WHERE j.unique_key = ANY(%(keys)s)
  AND j.state IN ('queued', 'scheduled', 'running', 'retrying')
ORDER BY j.unique_key, j.id

-- name: notify
-- Wake-up payloads carry no job data and are unambiguous whatever a queue is
-- called: "r:<queue>" (jobs ready), "d:<epoch>:<queue>" (a job becomes due
-- then), "c:<job id>" (cancel requested).
SELECT pg_catalog.pg_notify(%(channel)s, %(payload)s)
