-- Every statement Currant sends, by name. currant.sql loads this file into a
-- dict; "{schema}" becomes the validated, quoted schema name and every value
-- is a bound %(name)s parameter. A statement starts at "-- name: <name>"; the
-- comment lines after it say why it is shaped the way it is.

-- name: enqueue_one
-- One round trip for a single job: insert, and wake workers of that queue in
-- the same statement (delivered at the caller's COMMIT, merged per queue and
-- transaction by PostgreSQL). run_at is computed with the database clock. With
-- a unique_key, a live duplicate is not inserted and its id is returned
-- instead (inserted = false); when the conflicting row is not yet visible to
-- this snapshot nothing comes back and the caller retries.
WITH args AS (
    SELECT coalesce(%(run_at)s::timestamptz, {schema}.clock() + make_interval(secs => %(delay)s::double precision)) AS run_at
), ins AS (
    INSERT INTO {schema}.jobs (queue, task, payload, priority, max_attempts, run_at, state, unique_key)
    SELECT %(queue)s::text, %(task)s::text, %(payload)s::bytea, %(priority)s::smallint, %(max_attempts)s::integer, args.run_at,
           CASE WHEN args.run_at > {schema}.clock() THEN 'scheduled' ELSE 'queued' END::{schema}.job_state,
           %(unique_key)s::text
    FROM args
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('queued', 'scheduled', 'running', 'retrying')
        DO NOTHING
    RETURNING id, state, run_at
), woken AS (
    SELECT pg_catalog.pg_notify(%(channel)s::text, CASE WHEN ins.state = 'queued' THEN 'r:' || %(queue)s::text
                                       ELSE 'd:' || extract(epoch FROM ins.run_at)::text || ':' || %(queue)s::text END)
    FROM ins
)
SELECT ins.id, true AS inserted, (SELECT count(*) FROM woken) AS notified FROM ins
UNION ALL
SELECT j.id, false, 0 FROM {schema}.jobs j
WHERE %(unique_key)s::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ins)
  AND j.unique_key = %(unique_key)s::text
  AND j.state IN ('queued', 'scheduled', 'running', 'retrying')

-- name: reserve_ids
-- Bulk enqueue writes ids itself (COPY cannot return them), so it reserves
-- them from the identity sequence first, and reads the database clock once:
-- clock() is the transaction's start, the same instant for every row. The
-- sequence is named, not looked up: pg_get_serial_sequence() per row made
-- this statement eight times slower.
SELECT {schema}.clock() AS db_now,
       ARRAY(SELECT nextval('{schema}.jobs_id_seq')
             FROM generate_series(1, %(n)s)) AS ids

-- name: copy_jobs
-- The binary COPY stream is built by the core (write_job_rows); the column
-- order here must match it.
COPY {schema}.jobs (id, queue, task, payload, priority, max_attempts, run_at, state, unique_key)
FROM STDIN (FORMAT BINARY)

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

-- name: claim
-- The locking SELECTs sit in a CTE so LIMIT bounds the rows locked (the
-- "id IN (subquery LIMIT n)" form can lock more than n). Highest priority
-- first, FIFO within a priority, in three ordered parts, each an index walk
-- that stops after LIMIT rows: priority > 0 from jobs_claim_priority_idx,
-- priority 0 (almost every job) from jobs_claim_idx (queue, id), priority < 0
-- from jobs_claim_priority_idx again. UNION ALL runs its parts in order and
-- the outer LIMIT stops pulling once the batch is full, so a later part locks
-- nothing it does not return; an empty part costs one index probe. The
-- middle part names its queue as a range and orders by (queue, id): with
-- "queue = x" the planner drops the constant from the ORDER BY, and then the
-- primary key offers "ORDER BY id" as well, a walk that a stale estimate
-- (every job still queued, as right after a bulk enqueue) can prefer, and
-- that must step over every finished job before the first queued one. SKIP
-- LOCKED lets concurrent claimers pass each other.
-- The attempt is counted here, at claim time, and the lease (worker_id) is
-- taken in the same write. The update finds its rows by primary key through
-- "id = ANY(ARRAY(...))": joined to the CTE instead, an analyzed table with a
-- backlog makes the planner hash-join the whole table on every claim. The
-- update returns rows in id order, so the batch is sorted again for the
-- worker's local queue. Rescued jobs (rescues > 0) are left to claim_suspect.
-- The claimer's own registration is share-locked: a lease is only ever given
-- to a registered worker. A sweep that declares this worker dead either
-- deletes the row first (this claim then takes nothing) or waits for this claim
-- to commit (and its rescue, a later statement, then sees these jobs).
WITH owner AS (
    SELECT id FROM {schema}.workers WHERE id = %(worker)s FOR KEY SHARE
), next AS (
    SELECT id FROM (
        SELECT id FROM {schema}.jobs
        WHERE state = 'queued' AND queue = %(queue)s AND priority > 0 AND rescues = 0
          AND EXISTS (SELECT 1 FROM owner)
        ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS high
    UNION ALL
    SELECT id FROM (
        SELECT id FROM {schema}.jobs
        WHERE state = 'queued' AND queue >= %(queue)s AND queue <= %(queue)s AND priority = 0 AND rescues = 0
          AND EXISTS (SELECT 1 FROM owner)
        ORDER BY queue, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS normal
    UNION ALL
    SELECT id FROM (
        SELECT id FROM {schema}.jobs
        WHERE state = 'queued' AND queue = %(queue)s AND priority < 0 AND rescues = 0
          AND EXISTS (SELECT 1 FROM owner)
        ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS low
    LIMIT %(limit)s
), claimed AS (
    UPDATE {schema}.jobs j
    SET state = 'running', attempts = j.attempts + 1, started_at = {schema}.clock(), worker_id = %(worker)s
    WHERE j.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING j.id, j.attempts, j.task, j.payload, j.priority
)
SELECT id, attempts, task, payload FROM claimed ORDER BY priority DESC, id

-- name: claim_suspect
-- One job that was running on a worker that died. The worker claims it only
-- when it holds nothing else and runs it alone: if it kills this worker too,
-- no other job is rescued with it (see jobs_suspect_idx).
WITH owner AS (
    SELECT id FROM {schema}.workers WHERE id = %(worker)s FOR KEY SHARE
), next AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'queued' AND queue = %(queue)s AND rescues > 0 AND EXISTS (SELECT 1 FROM owner)
    ORDER BY priority DESC, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs j
SET state = 'running', attempts = j.attempts + 1, started_at = {schema}.clock(), worker_id = %(worker)s
WHERE j.id = ANY(ARRAY(SELECT id FROM next))
RETURNING j.id, j.attempts, j.task, j.payload

-- name: complete_succeeded
-- The hot completion: jobs that returned None. Fenced on (id, attempt, owner,
-- state): a worker that lost its lease changes nothing. Sent as its own
-- implicit transaction, never fused with the claim (a fused statement
-- deadlocks between claimers, see measured-floor.md). "j.id = ANY(ids)" lets
-- the planner reach the rows by primary key; with the join alone it misjudges
-- the unnest and scans the whole table.
-- Returns how many it recorded per queue and task (a few rows, counted by
-- the server) for the worker's activity report: no per-job work in Python.
WITH done AS (
    UPDATE {schema}.jobs j
    SET state = 'succeeded', finished_at = {schema}.clock()
    FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[]) AS d(id, attempt)
    WHERE j.id = ANY(%(ids)b::bigint[]) AND j.id = d.id
      AND j.attempts = d.attempt AND j.state = 'running' AND j.worker_id = %(worker)s
    RETURNING j.queue, j.task
)
SELECT queue, task, count(*) FROM done GROUP BY queue, task

-- name: complete_outcomes
-- Every other outcome, batched, same fence. kind: 's' succeeded with a result,
-- 'r' failed and may retry after delay seconds (database clock), 'f' failed
-- for good, 'c' cancelled. A retryable failure on its last attempt fails; the
-- job's own max_attempts wins over the task's (o.max_attempts). Returns each
-- row's new state and its attempt count and limit: the worker logs every
-- failed attempt with them.
UPDATE {schema}.jobs j
SET state = CASE
        WHEN o.kind = 's' THEN 'succeeded'
        WHEN o.kind = 'c' OR (o.kind = 'r' AND j.cancel_requested) THEN 'cancelled'
        WHEN o.kind = 'r' AND j.attempts < coalesce(j.max_attempts, o.max_attempts) THEN 'retrying'
        ELSE 'failed' END::{schema}.job_state,
    result = o.result,
    run_at = CASE WHEN o.kind = 'r' AND NOT j.cancel_requested AND j.attempts < coalesce(j.max_attempts, o.max_attempts)
                  THEN {schema}.clock() + make_interval(secs => o.delay) ELSE j.run_at END,
    finished_at = CASE WHEN o.kind = 'r' AND NOT j.cancel_requested AND j.attempts < coalesce(j.max_attempts, o.max_attempts)
                       THEN NULL ELSE {schema}.clock() END,
    worker_id = CASE WHEN o.kind = 'r' AND NOT j.cancel_requested AND j.attempts < coalesce(j.max_attempts, o.max_attempts)
                     THEN NULL ELSE j.worker_id END,
    errors = CASE WHEN o.error IS NULL THEN j.errors
                  ELSE coalesce(j.errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                      'attempt', j.attempts, 'at', {schema}.clock(), 'error', o.error, 'traceback', o.traceback)) END
FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[], %(kinds)s::text[], %(results)s::bytea[],
            %(errors)s::text[], %(tracebacks)s::text[], %(delays)s::double precision[],
            %(max_attempts)s::integer[])
     AS o(id, attempt, kind, result, error, traceback, delay, max_attempts)
WHERE j.id = ANY(%(ids)b::bigint[]) AND j.id = o.id
  AND j.attempts = o.attempt AND j.state = 'running' AND j.worker_id = %(worker)s
RETURNING j.id, j.state::text, j.queue, j.run_at, j.attempts, coalesce(j.max_attempts, o.max_attempts), j.task

-- name: release
-- Graceful shutdown and lease hand-back: claimed jobs that never started go
-- back untouched, their attempt refunded (or to cancelled, if that was asked
-- meanwhile). Same fence as completion.
UPDATE {schema}.jobs j
SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'queued' END::{schema}.job_state,
    finished_at = CASE WHEN j.cancel_requested THEN {schema}.clock() END,
    attempts = j.attempts - 1, worker_id = NULL, started_at = NULL
FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[]) AS d(id, attempt)
WHERE j.id = ANY(%(ids)b::bigint[]) AND j.id = d.id
  AND j.attempts = d.attempt AND j.state = 'running' AND j.worker_id = %(worker)s
RETURNING j.queue

-- name: release_unknown
-- After a reconnect the worker cannot know whether its last claim committed:
-- any job leased to it that it does not hold goes back, attempt refunded.
-- Scans running jobs without an index, but runs only after a reconnect.
UPDATE {schema}.jobs j
SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'queued' END::{schema}.job_state,
    finished_at = CASE WHEN j.cancel_requested THEN {schema}.clock() END,
    attempts = j.attempts - 1, worker_id = NULL, started_at = NULL
WHERE j.state = 'running' AND j.worker_id = %(worker)s AND NOT (j.id = ANY(%(held)s::bigint[]))
RETURNING j.queue

-- name: has_ready
-- The LISTEN connection's health check after a quiet spell: proves the
-- connection alive and doubles as that moment's fallback poll.
SELECT EXISTS (SELECT 1 FROM {schema}.jobs WHERE state = 'queued' AND rescues = 0 AND queue = ANY(%(queues)s))

-- name: register_worker
INSERT INTO {schema}.workers (hostname, pid, queues, concurrency)
VALUES (%(hostname)s, %(pid)s, %(queues)s, %(concurrency)s)
RETURNING id

-- name: list_workers
-- The live workers, as their heartbeats last described them (running is the
-- number of jobs each held then): no scan of the jobs table.
SELECT id, hostname, pid, queues, concurrency, running, started_at, last_seen,
       extract(epoch FROM {schema}.clock() - last_seen)::double precision AS silent_for
FROM {schema}.workers
ORDER BY hostname, pid, id

-- name: deregister_worker
-- The last thing a stopping worker does. Anything still leased to it (a job
-- whose outcome could not be reported) goes back to the queue in the same
-- transaction, so no lease outlives its owner.
WITH gone AS (
    DELETE FROM {schema}.workers WHERE id = %(worker)s RETURNING id
)
UPDATE {schema}.jobs j
SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'queued' END::{schema}.job_state,
    finished_at = CASE WHEN j.cancel_requested THEN {schema}.clock() END,
    worker_id = NULL
FROM gone
WHERE j.state = 'running' AND j.worker_id = gone.id

-- name: maintain
-- See {schema}.maintain() in the migrations: heartbeat, activity report,
-- promotion, rescue and pruning in one round trip.
SELECT alive, promoted, rescued, poisoned, pruned, next_due, has_work, suspects, cancel_ids, db_now
FROM {schema}.maintain(%(worker)s, %(queues)s, %(running)s, %(dead_after)s, %(max_rescues)s,
                       %(keep_succeeded)s, %(keep_failed)s, %(prune_batch)s, %(channel)s,
                       %(done_queues)s::text[], %(done_tasks)s::text[], %(done_outcomes)s::text[],
                       %(done_counts)s::bigint[])

-- name: get_job
SELECT id, task, queue, state::text, attempts, max_attempts, priority, result, errors,
       enqueued_at, started_at, finished_at, run_at, cancel_requested, unique_key,
       rescues, worker_id, {schema}.clock() AS db_now, payload
FROM {schema}.jobs WHERE id = %(id)s

-- name: cancel
-- Queued, scheduled or retrying jobs are cancelled on the spot; a running job
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
    WHERE j.id = old.id AND old.state IN ('queued', 'scheduled', 'retrying', 'running')
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
-- Counts per queue and state, and the age of the oldest job ready to run.
SELECT queue, state::text, count(*) AS jobs,
       extract(epoch FROM {schema}.clock() - min(run_at) FILTER (WHERE state = 'queued')) AS oldest_queued_age
FROM {schema}.jobs
GROUP BY queue, state
ORDER BY queue, state

-- name: list_jobs
-- The newest jobs in one state, optionally of one queue and task. Newest
-- first by primary key: LIMIT stops the walk early.
SELECT id, task, queue, state::text, attempts, max_attempts, enqueued_at, run_at, finished_at,
       errors -> -1 ->> 'error' AS last_error
FROM {schema}.jobs
WHERE state = %(state)s::{schema}.job_state
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: purge
-- Admin purge: delete finished (or, explicitly, queued) jobs of a state,
-- optionally of one queue, optionally only older than a number of seconds.
DELETE FROM {schema}.jobs
WHERE state = %(state)s::{schema}.job_state
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(older_than)s::double precision IS NULL
       OR coalesce(finished_at, enqueued_at) < {schema}.clock() - make_interval(secs => %(older_than)s))

-- name: periodic_register
-- A schedule seen for the first time starts from now: no backfill. A schedule
-- whose cron expression changed restarts from now as well.
INSERT INTO {schema}.periodic (name, schedule, last_tick) VALUES (%(name)s, %(schedule)s, {schema}.clock())
ON CONFLICT (name) DO UPDATE
    SET schedule = excluded.schedule, last_tick = {schema}.clock()
    WHERE {schema}.periodic.schedule IS DISTINCT FROM excluded.schedule
RETURNING last_tick

-- name: periodic_last
SELECT name, last_tick, {schema}.clock() AS db_now FROM {schema}.periodic WHERE name = ANY(%(names)s)

-- name: periodic_take
-- Compare-and-set on last_tick: of all the workers that see the same tick
-- due, exactly one moves it forward and enqueues the job in the same
-- transaction.
UPDATE {schema}.periodic SET last_tick = %(tick)s
WHERE name = %(name)s AND last_tick < %(tick)s
RETURNING name

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
