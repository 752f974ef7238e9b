-- Rate and concurrency limits (migration 0007_limits): what the workers
-- declare, how limited jobs are claimed, and how a job gets its key.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter.

-- name: claim_limited
-- The limited jobs of one queue, within their limits; see claim_limited() in
-- 0007_limits for the rules and the extra "held back" row. A function, not a
-- statement: it walks the keys with work one by one, locking each key's
-- bucket before counting, which one SQL statement cannot order.
SELECT * FROM {schema}.claim_limited(%(queue)s, %(worker)s, %(limit)s)

-- name: declare_limits
-- A starting worker states the limits of the tasks it knows: those with one
-- are written (a changed limit applies from the next claim on), those
-- without lose any old one. Rows are written only when they change, so a
-- fleet of workers starting at once does not queue up on the same rows.
WITH declared AS (
    SELECT * FROM unnest(%(tasks)s::text[], %(per_second)s::double precision[], %(burst)s::double precision[],
                         %(max_running)s::integer[]) AS d(task, per_second, burst, max_running)
), written AS (
    INSERT INTO {schema}.limits AS l (task, per_second, burst, max_running)
    SELECT task, per_second, burst, max_running FROM declared ORDER BY task
    ON CONFLICT (task) DO UPDATE
        SET per_second = excluded.per_second, burst = excluded.burst, max_running = excluded.max_running,
            updated_at = {schema}.clock()
        WHERE (l.per_second, l.burst, l.max_running)
              IS DISTINCT FROM (excluded.per_second, excluded.burst, excluded.max_running)
)
DELETE FROM {schema}.limits WHERE task = ANY(%(unlimited)s::text[])

-- name: set_limit_keys
-- Bulk enqueue of a limited task: COPY writes the rows as any others, then
-- this gives each its key in the same transaction (no worker sees a row
-- before it commits). Only limited tasks pay for the second write. A unique
-- key's live duplicate (its id comes back too) keeps the key it has.
UPDATE {schema}.jobs j SET limit_key = k.key
FROM unnest(%(ids)s::bigint[], %(keys)s::text[]) AS k(id, key)
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = k.id AND j.limit_key IS NULL

-- name: hand_to_limits
-- A job of a limited task that came through the normal claim (enqueued by a
-- producer that did not know the task, so without a key) goes back, its
-- attempt refunded, with the key the worker worked out for it: from then on
-- claim_limited takes it, within the limit. Same fence as a completion.
UPDATE {schema}.jobs j
SET state = 'queued', attempts = j.attempts - 1, worker_id = NULL, started_at = NULL, limit_key = d.key
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(keys)s::text[]) AS d(id, attempt, key)
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = d.id
  AND j.attempts = d.attempt AND j.state = 'running' AND j.worker_id = %(worker)s

-- name: prune_limit_buckets
-- Buckets idle for an hour are full again: dropping them changes nothing a
-- claim would see (see limit_buckets in 0007_limits).
DELETE FROM {schema}.limit_buckets WHERE refilled_at < {schema}.clock() - interval '1 hour'

-- name: list_limits
-- The admin's view: each declared limit, its queued and running jobs (a
-- scan of the limited jobs' indexes) and how many keys have a bucket.
SELECT l.task, l.per_second, l.burst, l.max_running, l.updated_at,
       (SELECT count(*) FROM {schema}.jobs j WHERE j.state = 'queued' AND j.task = l.task
          AND j.limit_key IS NOT NULL) AS queued,
       (SELECT count(*) FROM {schema}.jobs j WHERE j.state = 'running' AND j.task = l.task
          AND j.limit_key IS NOT NULL) AS running,
       (SELECT count(*) FROM {schema}.limit_buckets b WHERE b.task = l.task) AS keys
FROM {schema}.limits l
ORDER BY l.task
