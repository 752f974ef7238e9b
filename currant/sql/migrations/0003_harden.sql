-- 0003_harden: no back doors into the clock or the functions.
--
-- 1. The database clock in production is now(), full stop. Until this
--    migration clock() also honoured the session setting currant.clock_offset,
--    so a stray PGOPTIONS on one worker shifted its rescue sweep and pruning
--    (declaring live workers dead, pruning early). Tests that need to move
--    time turn the offset on for a schema with use_test_clock(true): it
--    replaces clock(), so only the schema's owner can do it.
-- 2. maintain() runs with search_path = pg_catalog, pg_temp and calls
--    pg_catalog.pg_notify: no function a user creates in another schema can
--    stand in for a built-in (the statements in currant/sql/*.sql qualify it too).
-- 3. Retention pruning skips rows another transaction has locked, so it can
--    no longer deadlock with an admin's purge deleting the same rows in
--    another order.
-- 4. A worker's row says what it is: its concurrency (set at registration)
--    and how many jobs it held at its last heartbeat, so listing workers
--    never scans the jobs table.
-- 5. Activity per minute: every heartbeat adds what its worker finished since
--    the last one, by queue, task and outcome, and the maintenance lock holder
--    records rescues and the id sequence's position (so "enqueued per minute"
--    is a subtraction). Dashboards, metrics and `top` read these few rows, not
--    the jobs table. Kept for a day.

ALTER TABLE {schema}.workers
    ADD COLUMN concurrency integer,
    ADD COLUMN running integer NOT NULL DEFAULT 0;

CREATE TABLE {schema}.activity (
    minute   timestamptz NOT NULL,
    queue    text NOT NULL,
    task     text NOT NULL,
    outcome  text NOT NULL,   -- succeeded | failed | retried | cancelled | rescued
    jobs     bigint NOT NULL,
    PRIMARY KEY (minute, queue, task, outcome)
);

CREATE TABLE {schema}.id_marks (
    minute   timestamptz PRIMARY KEY,
    last_id  bigint NOT NULL   -- the jobs id sequence's last value during that minute
);

DROP FUNCTION {schema}.maintain(bigint, text[], bigint[], double precision, integer, double precision,
                                double precision, integer, text);

CREATE OR REPLACE FUNCTION {schema}.clock() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.now() $$;

-- The test clock: clock() becomes now() + currant.clock_offset (an interval
-- the session sets, e.g. SET currant.clock_offset = '90 seconds'), or back to
-- now(). Sessions that plan afresh see the change at once; a worker's claim
-- and completion connections plan every execution afresh.
CREATE FUNCTION {schema}.use_test_clock(enabled boolean) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF enabled THEN
        EXECUTE $def$
            CREATE OR REPLACE FUNCTION {schema}.clock() RETURNS timestamptz
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $body$
                SELECT pg_catalog.now() + coalesce(
                    nullif(pg_catalog.current_setting('currant.clock_offset', true), '')::interval, interval '0')
            $body$
        $def$;
    ELSE
        EXECUTE $def$
            CREATE OR REPLACE FUNCTION {schema}.clock() RETURNS timestamptz
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $body$ SELECT pg_catalog.now() $body$
        $def$;
    END IF;
END
$fn$;

CREATE FUNCTION {schema}.maintain(
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
    next_due timestamptz, has_work boolean, suspects boolean, cancel_ids bigint[], db_now timestamptz
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
        WITH gone AS (
            DELETE FROM {schema}.workers
            WHERE last_seen < {schema}.clock() - make_interval(secs => p_dead_after)
              AND pg_postmaster_start_time() < {schema}.clock() - make_interval(secs => p_dead_after)
            RETURNING id
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
                WHERE j.worker_id = ANY(dead) AND j.state = 'running'
                RETURNING j.queue, j.task, j.state
            ), counted AS (
                INSERT INTO {schema}.activity AS a (minute, queue, task, outcome, jobs)
                SELECT date_trunc('minute', {schema}.clock()), back.queue, back.task,
                       CASE WHEN back.state = 'failed' THEN 'failed' ELSE 'rescued' END, count(*)
                FROM back GROUP BY 1, 2, 3, 4 ORDER BY 2, 3, 4
                ON CONFLICT (minute, queue, task, outcome) DO UPDATE SET jobs = a.jobs + excluded.jobs
            )
            SELECT count(*), count(*) FILTER (WHERE back.state = 'failed'),
                   array_agg(DISTINCT back.queue) FILTER (WHERE back.state = 'queued')
              INTO rescued, poisoned, woken FROM back;
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
    has_work := EXISTS (SELECT 1 FROM {schema}.jobs
                        WHERE state = 'queued' AND rescues = 0 AND queue = ANY(p_queues));
    suspects := EXISTS (SELECT 1 FROM {schema}.jobs
                        WHERE state = 'queued' AND rescues > 0 AND queue = ANY(p_queues));
    cancel_ids := ARRAY(SELECT id FROM {schema}.jobs
                        WHERE id = ANY(p_running) AND state = 'running' AND cancel_requested);
    db_now := {schema}.clock();
    RETURN NEXT;
END
$fn$;
