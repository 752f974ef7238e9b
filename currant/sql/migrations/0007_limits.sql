-- 0007_limits: rate limits and concurrency limits, global across workers,
-- enforced where the jobs are claimed.
--
-- A job of a limited task carries a limit_key: '' when the task's limit is
-- one for all its jobs, else the key it was enqueued with (a customer, an API
-- token). Every other job has NULL there, and the claim indexes now hold only
-- those: the normal claim never steps over a limited job held back, and a
-- queue without limited jobs is claimed exactly as before. Limited jobs are
-- found through their own index, one (task, key) at a time, by
-- claim_limited() below.
--
-- The limits themselves are the workers' (from @app.task(rate_limit=...,
-- max_running=...)): a starting worker writes its tasks' into limits. A rate
-- is a token bucket per (task, key) in limit_buckets, refilled by the clock at
-- each claim; a concurrency limit counts the key's running jobs.
--
-- The two claim indexes are rebuilt with the new predicate: on a large table
-- this migration takes as long as building them (the jobs table is locked
-- against writes meanwhile).

ALTER TABLE {schema}.jobs ADD COLUMN limit_key text;

DROP INDEX {schema}.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, id) WITH (deduplicate_items = off)
    WHERE state = 'queued' AND limit_key IS NULL;
DROP INDEX {schema}.jobs_claim_priority_idx;
CREATE INDEX jobs_claim_priority_idx ON {schema}.jobs (queue, priority DESC, id) WITH (deduplicate_items = off)
    WHERE state = 'queued' AND priority <> 0 AND limit_key IS NULL;

-- The claimable limited jobs, grouped by (task, key) so that the keys with
-- work can be listed by skipping through the index, and in claim order within one.
CREATE INDEX jobs_limited_idx ON {schema}.jobs (queue, task, limit_key, priority DESC, id)
    WHERE state = 'queued' AND limit_key IS NOT NULL;
-- A concurrency limit counts the running jobs of one (task, key).
CREATE INDEX jobs_limited_running_idx ON {schema}.jobs (task, limit_key)
    WHERE state = 'running' AND limit_key IS NOT NULL;
-- Jobs waiting for parents (0006), per queue, for the counts the dashboard and
-- the metrics show: without it each count read the whole table. 'waiting' is
-- the one state sorted before 'queued'; said that way because a fresh install
-- applies 0006 and this in one transaction, and PostgreSQL refuses a new enum
-- value in the transaction that added it. Queries say state = 'waiting': the
-- planner proves that it implies this predicate.
CREATE INDEX jobs_waiting_idx ON {schema}.jobs (queue, id) WHERE state < 'queued';

CREATE TABLE {schema}.limits (
    task        text PRIMARY KEY,
    per_second  double precision CHECK (per_second > 0),  -- tokens added per second; NULL: no rate limit
    burst       double precision CHECK (burst >= 1),      -- the most tokens a bucket holds
    max_running integer CHECK (max_running > 0),          -- NULL: no concurrency limit
    updated_at  timestamptz NOT NULL DEFAULT {schema}.clock()
);

-- A bucket idle for an hour is full again (every rate refills at least one
-- token an hour and holds at least one): the worker's upkeep drops those, so
-- one-off keys do not pile up.
CREATE TABLE {schema}.limit_buckets (
    task        text NOT NULL,
    key         text NOT NULL,
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL,
    PRIMARY KEY (task, key)
);

-- Claim up to p_limit limited jobs of one queue for one worker, key by key,
-- each within its limits. Returns the claim's columns; when some key is held
-- back, one more row with a NULL id says until when: waited = seconds until
-- the first held-back key's next token (NULL: none waits for a token), and
-- attempts = 1 when some key waits for one of its running jobs to finish.
--
-- Exactness: a key's bucket row is locked (FOR UPDATE, in key order: two
-- claimers cannot deadlock) before its running jobs are counted and its
-- tokens spent, so claimers of one key take turns, and each counts with a
-- snapshot taken after the one before it committed. A key whose task has no
-- row in limits (no worker declares a limit for it any more) is claimed as if
-- unlimited. Held-back keys cost one index probe each per call; at most 1,000
-- keys are looked at per call.
CREATE FUNCTION {schema}.claim_limited(p_queue text, p_worker bigint, p_limit integer)
RETURNS TABLE (id bigint, attempts integer, task text, payload bytea, max_attempts integer,
               waited double precision, pass_results "char", input_ids bigint[], inputs bytea[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- The claim connection turns nested loops off (see WORK_CONNECTION_OPTIONS);
-- the walk over the keys is one, and without it each call took 100 ms, not 2.
SET enable_nestloop = on
AS $fn$
#variable_conflict use_column
DECLARE
    now_at   timestamptz := {schema}.clock();
    pair     record;
    rule     {schema}.limits;
    bucket   {schema}.limit_buckets;
    room     integer;
    by_rate  integer;
    by_count integer;
    have     double precision;  -- the key's tokens
    got      integer;
    taken    integer := 0;
    hold     double precision;
    held     boolean := false;
BEGIN
    -- The claim's rules: a lease only for a registered worker, nothing from a paused queue.
    PERFORM 1 FROM {schema}.workers w WHERE w.id = p_worker FOR KEY SHARE;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = p_queue) THEN
        RETURN;
    END IF;
    FOR pair IN
        WITH RECURSIVE keys AS (
            (SELECT j.task, j.limit_key FROM {schema}.jobs j
             WHERE j.state = 'queued' AND j.queue = p_queue AND j.limit_key IS NOT NULL
             ORDER BY j.task, j.limit_key LIMIT 1)
            UNION ALL
            SELECT n.task, n.limit_key FROM keys k CROSS JOIN LATERAL (
                SELECT j.task, j.limit_key FROM {schema}.jobs j
                WHERE j.state = 'queued' AND j.queue = p_queue AND j.limit_key IS NOT NULL
                  AND (j.task, j.limit_key) > (k.task, k.limit_key)
                ORDER BY j.task, j.limit_key LIMIT 1) n
        )
        SELECT keys.task, keys.limit_key FROM keys LIMIT 1000
    LOOP
        EXIT WHEN taken >= p_limit;
        by_rate := NULL; by_count := NULL; have := NULL;
        SELECT * INTO rule FROM {schema}.limits l WHERE l.task = pair.task;
        IF FOUND THEN
            INSERT INTO {schema}.limit_buckets (task, key, tokens, refilled_at)
            VALUES (pair.task, pair.limit_key, coalesce(rule.burst, 1), now_at)
            ON CONFLICT DO NOTHING;
            SELECT * INTO bucket FROM {schema}.limit_buckets b
            WHERE b.task = pair.task AND b.key = pair.limit_key FOR UPDATE;
            IF rule.max_running IS NOT NULL THEN
                by_count := rule.max_running - (
                    SELECT count(*) FROM {schema}.jobs j
                    WHERE j.state = 'running' AND j.task = pair.task AND j.limit_key = pair.limit_key)::integer;
            END IF;
            IF rule.per_second IS NOT NULL THEN
                have := least(rule.burst, bucket.tokens
                              + greatest(0, extract(epoch FROM now_at - bucket.refilled_at)) * rule.per_second);
                by_rate := floor(have)::integer;
            END IF;
        END IF;
        room := least(p_limit - taken, by_rate, by_count);
        got := 0;
        IF room > 0 THEN
            RETURN QUERY
            WITH next AS (
                SELECT j.id FROM {schema}.jobs j
                WHERE j.state = 'queued' AND j.queue = p_queue AND j.task = pair.task AND j.limit_key = pair.limit_key
                ORDER BY j.priority DESC, j.id
                LIMIT room FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE {schema}.jobs j
                SET state = 'running', attempts = j.attempts + 1, started_at = now_at, worker_id = p_worker
                WHERE j.id = ANY(ARRAY(SELECT next.id FROM next))
                RETURNING j.id, j.attempts, j.task, j.payload, j.priority, j.max_attempts, j.run_at,
                          j.pass_results, j.input_ids, j.inputs
            )
            SELECT c.id, c.attempts, c.task, c.payload, c.max_attempts,
                   extract(epoch FROM now_at - c.run_at)::double precision,
                   c.pass_results, c.input_ids, c.inputs
            FROM claimed c ORDER BY c.priority DESC, c.id;
            GET DIAGNOSTICS got = ROW_COUNT;
            taken := taken + got;
        END IF;
        IF have IS NOT NULL THEN
            -- Never back in time: a claimer whose statement began before the
            -- one it waited for on this row would otherwise count that time twice.
            UPDATE {schema}.limit_buckets b SET tokens = have - got, refilled_at = greatest(b.refilled_at, now_at)
            WHERE b.task = pair.task AND b.key = pair.limit_key;
        END IF;
        -- Held back: a limit (room came from it), not the batch or a lack of jobs, stopped this key.
        IF got = room AND room < p_limit - taken + got THEN
            IF by_rate = room AND have - got < 1 THEN
                hold := least(hold, (1 - (have - got)) / rule.per_second);
            END IF;
            IF by_count = room THEN
                held := true;
            END IF;
        END IF;
    END LOOP;
    IF hold IS NOT NULL OR held THEN
        RETURN QUERY SELECT NULL::bigint, held::integer, NULL::text, NULL::bytea, NULL::integer,
                            hold, NULL::"char", NULL::bigint[], NULL::bytea[];
    END IF;
END
$fn$;

-- maintain() once more (its whole body: 0006's, one change): with limited
-- jobs outside jobs_claim_idx, "is there work" asks both claim indexes; asked
-- as one, it would match neither partial index and read the whole table on
-- every heartbeat. Same signature and result: replaced in place, so grants
-- on it (a worker role's EXECUTE) stay.
CREATE OR REPLACE FUNCTION {schema}.maintain(
    p_worker        bigint,
    p_queues        text[],
    p_running       bigint[],
    p_dead_after    double precision,
    p_max_rescues   integer,
    p_keep_succeeded double precision,
    p_keep_failed   double precision,
    p_prune_batch   integer,
    p_channel       text,
    p_done_queues   text[],   -- what this worker finished since its last heartbeat:
    p_done_tasks    text[],   -- (queue, task, outcome, jobs) side by side
    p_done_outcomes text[],
    p_done_counts   bigint[]
) RETURNS TABLE (
    alive boolean, promoted integer, rescued integer, poisoned integer, pruned integer,
    next_due timestamptz, has_work boolean, suspects boolean, cancel_ids bigint[], db_now timestamptz,
    -- what this call's rescue did, by (queue, task, outcome: rescued | failed), for the worker's metrics
    rescue_queues text[], rescue_tasks text[], rescue_outcomes text[], rescue_counts bigint[]
) LANGUAGE plpgsql
-- Every name below is schema-qualified or in pg_catalog: with this search_path
-- no object a user creates elsewhere can stand in for one of them.
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    woken text[];
    dead bigint[];
    n integer;
BEGIN
    UPDATE {schema}.workers SET last_seen = {schema}.clock(), running = coalesce(cardinality(p_running), 0)
    WHERE id = p_worker;
    alive := FOUND;
    -- In key order, so two heartbeats adding to the same rows cannot deadlock.
    INSERT INTO {schema}.activity AS a (minute, queue, task, outcome, jobs)
    SELECT date_trunc('minute', {schema}.clock()), d_queue, d_task, d_outcome, sum(d_jobs)
    FROM unnest(p_done_queues, p_done_tasks, p_done_outcomes, p_done_counts) AS u(d_queue, d_task, d_outcome, d_jobs)
    GROUP BY d_queue, d_task, d_outcome
    ORDER BY d_queue, d_task, d_outcome
    ON CONFLICT (minute, queue, task, outcome) DO UPDATE SET jobs = a.jobs + excluded.jobs;
    rescued := 0; poisoned := 0; pruned := 0;

    WITH due AS (
        SELECT id FROM {schema}.jobs
        WHERE state IN ('scheduled', 'retrying') AND run_at <= {schema}.clock()
        ORDER BY run_at LIMIT 10000
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE {schema}.jobs j SET state = 'queued' FROM due WHERE j.id = due.id
        RETURNING j.queue
    )
    SELECT count(*), array_agg(DISTINCT moved.queue) INTO promoted, woken FROM moved;
    PERFORM pg_catalog.pg_notify(p_channel, 'r:' || q) FROM unnest(woken) AS q;

    IF pg_try_advisory_xact_lock(hashtext('{schema}.maintain')) THEN
        -- Silence while the server itself was down is not death: right after a
        -- restart every worker looks stale until its next heartbeat, so none is
        -- declared dead before the server has been up for p_dead_after.
        -- Each declared-dead worker leaves a row in worker_deaths (0004): who it
        -- was, when it was last heard of, and (below) what was taken back from it.
        WITH gone AS (
            DELETE FROM {schema}.workers
            WHERE last_seen < {schema}.clock() - make_interval(secs => p_dead_after)
              AND pg_postmaster_start_time() < {schema}.clock() - make_interval(secs => p_dead_after)
            RETURNING id, hostname, pid, queues, concurrency, running, started_at, last_seen
        ), noted AS (
            INSERT INTO {schema}.worker_deaths (worker_id, hostname, pid, queues, concurrency, running,
                                                started_at, last_seen, declared_dead_at)
            SELECT id, hostname, pid, queues, concurrency, running, started_at, last_seen, {schema}.clock()
            FROM gone
            ON CONFLICT (worker_id) DO NOTHING
        )
        SELECT array_agg(id) INTO dead FROM gone;
        IF dead IS NOT NULL THEN
            -- Fenced on state and owner in the same statement: a job its dead
            -- owner managed to complete is left alone.
            WITH back AS (
                UPDATE {schema}.jobs j SET
                    rescues = j.rescues + 1,
                    worker_id = NULL,
                    -- A job-level max_attempts is enforced here; the task's own
                    -- limit (max_attempts NULL) is the next worker's to apply.
                    state = CASE WHEN j.cancel_requested THEN 'cancelled'
                                 WHEN j.rescues + 1 >= p_max_rescues OR j.attempts >= j.max_attempts THEN 'failed'
                                 ELSE 'queued' END::{schema}.job_state,
                    finished_at = CASE WHEN j.cancel_requested OR j.rescues + 1 >= p_max_rescues
                                            OR j.attempts >= j.max_attempts
                                       THEN {schema}.clock() END,
                    errors = coalesce(j.errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                        'attempt', j.attempts, 'at', {schema}.clock(),
                        'error', 'WorkerLost: worker ' || j.worker_id || ' stopped heartbeating while it held this job'
                            || CASE WHEN j.rescues + 1 >= p_max_rescues
                                    THEN ' (rescued ' || (j.rescues + 1) || ' times: treated as poison)' ELSE '' END,
                        'traceback', NULL))
                FROM unnest(dead) AS d(worker)
                WHERE j.worker_id = ANY(dead) AND j.worker_id = d.worker AND j.state = 'running'
                RETURNING d.worker, j.id, j.queue, j.task, j.state
            ), per_worker AS (
                -- What each dead worker lost, for the dashboard (at most 100 ids each).
                UPDATE {schema}.worker_deaths w SET
                    rescued = b.rescued, poisoned = b.poisoned, job_ids = b.job_ids
                FROM (SELECT back.worker, count(*) FILTER (WHERE back.state <> 'failed') AS rescued,
                             count(*) FILTER (WHERE back.state = 'failed') AS poisoned,
                             (array_agg(back.id ORDER BY back.id))[1:100] AS job_ids
                      FROM back GROUP BY back.worker) AS b
                WHERE w.worker_id = b.worker
            ), tally AS (
                SELECT back.queue, back.task, CASE WHEN back.state = 'failed' THEN 'failed' ELSE 'rescued' END
                       AS outcome, count(*) AS n
                FROM back GROUP BY 1, 2, 3
            ), counted AS (
                INSERT INTO {schema}.activity AS a (minute, queue, task, outcome, jobs)
                SELECT date_trunc('minute', {schema}.clock()), tally.queue, tally.task, tally.outcome, tally.n
                FROM tally ORDER BY 2, 3, 4
                ON CONFLICT (minute, queue, task, outcome) DO UPDATE SET jobs = a.jobs + excluded.jobs
            )
            SELECT (SELECT count(*) FROM back), (SELECT count(*) FROM back WHERE back.state = 'failed'),
                   (SELECT array_agg(DISTINCT back.queue) FROM back WHERE back.state = 'queued'),
                   (SELECT array_agg(tally.queue) FROM tally), (SELECT array_agg(tally.task) FROM tally),
                   (SELECT array_agg(tally.outcome) FROM tally), (SELECT array_agg(tally.n) FROM tally)
              INTO rescued, poisoned, woken, rescue_queues, rescue_tasks, rescue_outcomes, rescue_counts;
            PERFORM pg_catalog.pg_notify(p_channel, 'r:' || q) FROM unnest(woken) AS q;
        END IF;

        -- pg_sequence_last_value needs only USAGE on the sequence, as the
        -- worker's role has (reading the sequence as a table needs SELECT).
        INSERT INTO {schema}.id_marks (minute, last_id)
        SELECT date_trunc('minute', {schema}.clock()),
               coalesce(pg_sequence_last_value('{schema}.jobs_id_seq'::regclass), 0)
        ON CONFLICT (minute) DO UPDATE SET last_id = excluded.last_id;
        DELETE FROM {schema}.activity WHERE minute < {schema}.clock() - interval '1 day';
        DELETE FROM {schema}.id_marks WHERE minute < {schema}.clock() - interval '1 day';
        DELETE FROM {schema}.worker_deaths WHERE declared_dead_at < {schema}.clock() - interval '1 day';

        -- SKIP LOCKED: a row an admin's purge (or anyone) has locked is left
        -- for the next round, so pruning never waits on, or deadlocks with,
        -- another deleter taking the same rows in another order.
        FOR i IN 1..10 LOOP
            DELETE FROM {schema}.jobs WHERE id IN (
                SELECT id FROM {schema}.jobs
                WHERE state = 'succeeded' AND finished_at < {schema}.clock() - make_interval(secs => p_keep_succeeded)
                ORDER BY finished_at LIMIT p_prune_batch FOR UPDATE SKIP LOCKED);
            GET DIAGNOSTICS n = ROW_COUNT;
            pruned := pruned + n;
            EXIT WHEN n < p_prune_batch;
        END LOOP;
        FOR i IN 1..10 LOOP
            DELETE FROM {schema}.jobs WHERE id IN (
                SELECT id FROM {schema}.jobs
                WHERE state IN ('failed', 'cancelled') AND finished_at < {schema}.clock() - make_interval(secs => p_keep_failed)
                LIMIT p_prune_batch FOR UPDATE SKIP LOCKED);
            GET DIAGNOSTICS n = ROW_COUNT;
            pruned := pruned + n;
            EXIT WHEN n < p_prune_batch;
        END LOOP;
    END IF;

    SELECT min(run_at) INTO next_due FROM {schema}.jobs WHERE state IN ('scheduled', 'retrying');
    -- A paused queue's jobs are not work: a worker must not wake (nor a burst
    -- worker stay) for what it may not claim.
    -- Two parts, one per partial index (a held-back limited job is work to come).
    has_work := EXISTS (SELECT 1 FROM {schema}.jobs
                        WHERE state = 'queued' AND rescues = 0 AND limit_key IS NULL AND queue = ANY(p_queues)
                          AND queue NOT IN (SELECT name FROM {schema}.queues))
             OR EXISTS (SELECT 1 FROM {schema}.jobs
                        WHERE state = 'queued' AND limit_key IS NOT NULL AND queue = ANY(p_queues)
                          AND queue NOT IN (SELECT name FROM {schema}.queues));
    suspects := EXISTS (SELECT 1 FROM {schema}.jobs
                        WHERE state = 'queued' AND rescues > 0 AND queue = ANY(p_queues)
                          AND queue NOT IN (SELECT name FROM {schema}.queues));
    cancel_ids := ARRAY(SELECT id FROM {schema}.jobs
                        WHERE id = ANY(p_running) AND state = 'running' AND cancel_requested);
    db_now := {schema}.clock();
    RETURN NEXT;
END
$fn$;
