-- What a worker sends: claims, completions, hand-backs, registration and its
-- heartbeat. These run on the claim and completion connections under the
-- planner settings of currant.worker.links.WORK_CONNECTION_OPTIONS (the
-- heartbeat and registration too, on the claims connection: maintain() sets
-- its own, migration 0008).
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter. A
-- statement starts at "-- name: <name>"; the comment lines after it say why
-- it is shaped the way it is.

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
-- update's rows come in no promised order: the worker sorts the batch by
-- (priority DESC, id) itself (currant.worker.claimer), because a sort here
-- (a CTE around the update and an ORDER BY) cost 3 % of the server's work
-- per job (benchmarks/instructions.py drain). Each row also says the job's
-- own attempt limit (so the worker knows a failed attempt's fate, for its
-- hooks) and how long the job waited past its run_at (the latency users
-- feel, for metrics; date_part is float arithmetic, extract() would be
-- numeric at twice the cost). Rescued jobs (rescues > 0) are left to
-- claim_suspect.
-- The claimer's own registration is share-locked: a lease is only ever given
-- to a registered worker. A sweep that declares this worker dead either
-- deletes the row first (this claim then takes nothing) or waits for this claim
-- to commit (and its rescue, a later statement, then sees these jobs).
-- A paused queue (a row in queues) gives nothing: one probe of a tiny table.
-- Jobs of limited tasks (limit_key set) are not in the claim indexes and not
-- taken here: claim_limited takes them, within their limits (0007_limits).
-- A job that waited for parents and asked for their results gets them
-- (pass_results, input_ids, inputs: NULL for every other job).
WITH owner AS (
    SELECT id FROM {schema}.workers WHERE id = %(worker)s
      AND NOT EXISTS (SELECT 1 FROM {schema}.queues WHERE name = %(queue)s)
    FOR KEY SHARE
), next AS (
    SELECT id FROM (
        SELECT id FROM {schema}.jobs
        WHERE state = 'queued' AND queue = %(queue)s AND priority > 0 AND rescues = 0 AND limit_key IS NULL
          AND EXISTS (SELECT 1 FROM owner)
        ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS high
    UNION ALL
    SELECT id FROM (
        SELECT id FROM {schema}.jobs
        WHERE state = 'queued' AND queue >= %(queue)s AND queue <= %(queue)s AND priority = 0 AND rescues = 0
          AND limit_key IS NULL
          AND EXISTS (SELECT 1 FROM owner)
        ORDER BY queue, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS normal
    UNION ALL
    SELECT id FROM (
        SELECT id FROM {schema}.jobs
        WHERE state = 'queued' AND queue = %(queue)s AND priority < 0 AND rescues = 0 AND limit_key IS NULL
          AND EXISTS (SELECT 1 FROM owner)
        ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS low
    LIMIT %(limit)s
)
UPDATE {schema}.jobs j
SET state = 'running', attempts = j.attempts + 1, started_at = {schema}.clock(), worker_id = %(worker)s
WHERE j.id = ANY(ARRAY(SELECT id FROM next))
RETURNING j.id, j.attempts, j.task, j.payload, j.max_attempts,
          date_part('epoch', {schema}.clock() - j.run_at) AS waited,
          j.pass_results, j.input_ids, j.inputs, j.priority

-- name: claim_suspect
-- One job that was running on a worker that died. The worker claims it only
-- when it holds nothing else and runs it alone: if it kills this worker too,
-- no other job is rescued with it (see jobs_suspect_idx). Same columns and
-- the same pause rule as the claim. A rescued limited job is claim_limited's.
WITH owner AS (
    SELECT id FROM {schema}.workers WHERE id = %(worker)s
      AND NOT EXISTS (SELECT 1 FROM {schema}.queues WHERE name = %(queue)s)
    FOR KEY SHARE
), next AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'queued' AND queue = %(queue)s AND rescues > 0 AND limit_key IS NULL
      AND EXISTS (SELECT 1 FROM owner)
    ORDER BY priority DESC, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs j
SET state = 'running', attempts = j.attempts + 1, started_at = {schema}.clock(), worker_id = %(worker)s
WHERE j.id = ANY(ARRAY(SELECT id FROM next))
RETURNING j.id, j.attempts, j.task, j.payload, j.max_attempts,
          date_part('epoch', {schema}.clock() - j.run_at) AS waited,
          j.pass_results, j.input_ids, j.inputs

-- name: complete_succeeded
-- The hot completion: jobs that returned None. Fenced on (id, attempt, owner,
-- state): a worker that lost its lease changes nothing. One attempt number per
-- statement: the worker sends one per attempt number in its batch (nearly
-- always one), since a scalar fence costs the server about 5,300 instructions
-- per job less than joining the ids to an array of attempts (the unnest, its
-- hash; BENCHMARKS.md, issue 16 round four). Sent as its own
-- implicit transaction, never fused with the claim (a fused statement
-- deadlocks between claimers, see measured-floor.md). "j.id = ANY(ids)" lets
-- the planner reach the rows by primary key; with the join alone it misjudges
-- the unnest and scans the whole table.
-- Returns how many it recorded, and only when that is not all of them (a
-- lease lost meanwhile: rare) which ones: the worker counts the activity per
-- queue and task itself, from the jobs it holds. Returning every row's queue
-- and task and grouping them here cost 2.5 % of the server's work per job.
-- The CASE runs its subquery only when some row was fenced.
WITH done AS (
    UPDATE {schema}.jobs j
    SET state = 'succeeded', finished_at = {schema}.clock()
    WHERE j.id = ANY(%(ids)b::bigint[])
      AND j.attempts = %(attempt)s::integer AND j.state = 'running' AND j.worker_id = %(worker)s
    RETURNING j.id
), recorded AS (
    SELECT count(*) AS n FROM done
)
SELECT n, CASE WHEN n < cardinality(%(ids)b::bigint[]) THEN ARRAY(SELECT id FROM done) END
FROM recorded

-- name: complete_succeeded_discarding
-- complete_succeeded for a worker that keeps no succeeded jobs
-- (keep_succeeded = 0): the rows are deleted instead of updated. A delete
-- writes no new row version and no index entries, where the update writes
-- both (state is in partial-index predicates, so it is never HOT): about half
-- the server's work of a completion. Same fence (one attempt number per
-- statement), same answer. A job that
-- others depend on, or a group member, is updated as before: its dependents
-- are released by the trigger on that update and its group counts it. That
-- second update runs only when the delete took fewer rows than it was given
-- (an InitPlan gates it): in the common case no such job is in the batch.
WITH gone AS (
    DELETE FROM {schema}.jobs j
    WHERE j.id = ANY(%(ids)b::bigint[])
      AND j.attempts = %(attempt)s::integer AND j.state = 'running' AND j.worker_id = %(worker)s
      AND j.dependents IS NOT TRUE AND j.group_id IS NULL
    RETURNING j.id
), kept AS (
    UPDATE {schema}.jobs j
    SET state = 'succeeded', finished_at = {schema}.clock()
    WHERE (SELECT count(*) FROM gone) < cardinality(%(ids)b::bigint[])
      AND j.id = ANY(%(ids)b::bigint[])
      AND j.attempts = %(attempt)s::integer AND j.state = 'running' AND j.worker_id = %(worker)s
      AND (j.dependents OR j.group_id IS NOT NULL)
    RETURNING j.id
), done AS (
    SELECT id FROM gone UNION ALL SELECT id FROM kept
), recorded AS (
    SELECT count(*) AS n FROM done
)
SELECT n, CASE WHEN n < cardinality(%(ids)b::bigint[]) THEN ARRAY(SELECT id FROM done) END
FROM recorded

-- name: complete_succeeded_archiving
-- Every success of a worker whose schema has the archive on (0009_archive):
-- the rows move from jobs to archive, a delete and an insert in one
-- statement, so that retention drops archive's partitions instead of
-- deleting rows. results are the successes' return values (msgpack, NULL for
-- None), as a binary bytea[] like complete_outcomes'. Same fence (one attempt
-- number per statement), same answer as complete_succeeded, and the same
-- exception as the discarding form: a job others depend on, or a group
-- member, is updated in place (its dependents are released by the trigger on
-- that update, and read its result there).
-- "gone" returns the row as archive stores it (its column order is jobs'),
-- but for state and finished_at, which the insert sets; the data-modifying
-- CTE "archived" runs to completion though nothing reads it.
WITH gone AS (
    DELETE FROM {schema}.jobs j
    USING unnest(%(ids)b::bigint[], %(results)b::bytea[]) AS d(id, result)
    WHERE j.id = ANY(%(ids)b::bigint[]) AND j.id = d.id
      AND j.attempts = %(attempt)s::integer AND j.state = 'running' AND j.worker_id = %(worker)s
      AND j.dependents IS NOT TRUE AND j.group_id IS NULL
    RETURNING j.id, j.queue, j.task, j.payload, j.priority, j.attempts, j.max_attempts, j.rescues, j.run_at,
              j.enqueued_at, j.started_at, j.worker_id, j.unique_key, j.cancel_requested, d.result, j.errors,
              j.progress, j.parents_left, j.dependents, j.on_parent_failure, j.pass_results, j.input_ids, j.inputs,
              j.group_id, j.limit_key
), archived AS (
    INSERT INTO {schema}.archive
    SELECT id, queue, task, payload, priority, 'succeeded', attempts, max_attempts, rescues, run_at, enqueued_at,
           started_at, {schema}.clock(), worker_id, unique_key, cancel_requested, result, errors, progress,
           parents_left, dependents, on_parent_failure, pass_results, input_ids, inputs, group_id, limit_key
    FROM gone
), kept AS (
    UPDATE {schema}.jobs j
    SET state = 'succeeded', finished_at = {schema}.clock(), result = d.result
    FROM unnest(%(ids)b::bigint[], %(results)b::bytea[]) AS d(id, result)
    WHERE (SELECT count(*) FROM gone) < cardinality(%(ids)b::bigint[])
      AND j.id = ANY(%(ids)b::bigint[]) AND j.id = d.id
      AND j.attempts = %(attempt)s::integer AND j.state = 'running' AND j.worker_id = %(worker)s
      AND (j.dependents OR j.group_id IS NOT NULL)
    RETURNING j.id
), done AS (
    SELECT id FROM gone UNION ALL SELECT id FROM kept
), recorded AS (
    SELECT count(*) AS n FROM done
)
SELECT n, CASE WHEN n < cardinality(%(ids)b::bigint[]) THEN ARRAY(SELECT id FROM done) END
FROM recorded

-- name: complete_outcomes
-- Every other outcome, batched, same fence. kind: 's' succeeded with a result,
-- 'r' failed and may retry after delay seconds (database clock), 'f' failed
-- for good, 'c' cancelled. A retryable failure on its last attempt fails; the
-- job's own max_attempts wins over the task's (o.max_attempts). Returns each
-- row's new state and its attempt count and limit: the worker logs every
-- failed attempt with them. The results (msgpack) go as a binary bytea[]:
-- as text every byte is escaped on the way and unescaped here, which took
-- 28 % of a worker's time on 10 KB results (benchmarks/payloads.py).
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
FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[], %(kinds)s::text[], %(results)b::bytea[],
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
-- connection alive and doubles as that moment's fallback poll (paused queues
-- do not count). One part per claim index (jobs of limited tasks are in
-- their own): as one test it would match neither and read the whole table.
SELECT EXISTS (SELECT 1 FROM {schema}.jobs WHERE state = 'queued' AND rescues = 0 AND limit_key IS NULL
                 AND queue = ANY(%(queues)s) AND queue NOT IN (SELECT name FROM {schema}.queues))
    OR EXISTS (SELECT 1 FROM {schema}.jobs WHERE state = 'queued' AND limit_key IS NOT NULL
                 AND queue = ANY(%(queues)s) AND queue NOT IN (SELECT name FROM {schema}.queues))

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
SELECT alive, promoted, rescued, poisoned, pruned, next_due, has_work, suspects, cancel_ids, db_now,
       rescue_queues, rescue_tasks, rescue_outcomes, rescue_counts
FROM {schema}.maintain(%(worker)s, %(queues)s, %(running)s, %(dead_after)s, %(max_rescues)s,
                       %(keep_succeeded)s, %(keep_failed)s, %(prune_batch)s, %(channel)s,
                       %(done_queues)s::text[], %(done_tasks)s::text[], %(done_outcomes)s::text[],
                       %(done_counts)s::bigint[])

-- name: record_progress
-- The latest progress report of each running job, written at most once a
-- second per worker (currant.worker.progress), stamped with the database
-- clock. Fenced like a completion: a worker that lost its lease writes
-- nothing. It never waits for a row lock (SKIP LOCKED: a report for a row
-- someone holds is dropped; the next one comes a second later): it shares
-- the claims connection with the heartbeat, and a heartbeat queued behind a
-- write waiting on a user's lock would lose the lease.
UPDATE {schema}.jobs j
SET progress = p.report || jsonb_build_object('attempt', p.attempt, 'at', {schema}.clock())
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(reports)s::jsonb[]) AS p(id, attempt, report)
WHERE j.id IN (
        SELECT l.id FROM {schema}.jobs l
        WHERE l.id = ANY(%(ids)s::bigint[]) AND l.state = 'running' AND l.worker_id = %(worker)s
        FOR UPDATE SKIP LOCKED
    )
  AND j.id = p.id AND j.attempts = p.attempt AND j.state = 'running' AND j.worker_id = %(worker)s

-- name: begin_work
-- Through a transaction-mode pooler (PgBouncer) the claim and completion
-- connections cannot carry their planner settings as startup options (the
-- pooler refuses them) nor as session SETs (the next transaction may run on
-- another server connection). So each of their round trips opens a
-- transaction with this one statement (sent as one simple query: one network
-- round trip) and the link commits it after the round trip's statements. SET
-- LOCAL ends with the transaction, so nothing leaks to the pooler's other
-- clients. The same settings as WORK_CONNECTION_OPTIONS (a unit test
-- keeps them equal), for the reasons given there (BENCHMARKS.md, "Planner
-- traps").
BEGIN; SET LOCAL enable_nestloop = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
SET LOCAL plan_cache_mode = auto; SET LOCAL jit = off
