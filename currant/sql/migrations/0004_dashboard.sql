-- 0004_dashboard: what the dashboard needs that the tables did not keep.
--
-- Recently dead workers. A worker declared dead by maintain() used to vanish
-- with its row in workers; now the sweep also writes who it was (host, pid,
-- queues, concurrency, jobs held at its last heartbeat, last heartbeat) to
-- worker_deaths, and the rescue that follows in the same call adds what was
-- taken back from it: how many jobs went back to the queue, how many failed
-- as poison, and the first 100 of their ids. Kept for a day, like activity.
-- Rows are written only when a worker dies, so the hot paths (enqueue, claim,
-- completion, heartbeat) pay nothing for them.
--
-- maintain() is replaced whole: its body is 0003's with those two writes and
-- the day's pruning of worker_deaths added; signature and search_path unchanged.
-- The rescue UPDATE names the dead worker of each row through unnest(dead)
-- (RETURNING sees worker_id after the update, when it is already NULL).

CREATE TABLE {schema}.worker_deaths (
    worker_id         bigint PRIMARY KEY,
    hostname          text NOT NULL,
    pid               integer NOT NULL,
    queues            text[] NOT NULL,
    concurrency       integer,
    running           integer NOT NULL,         -- jobs it held at its last heartbeat
    started_at        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,     -- its last heartbeat
    declared_dead_at  timestamptz NOT NULL,
    rescued           integer NOT NULL DEFAULT 0,   -- jobs put back in their queue
    poisoned          integer NOT NULL DEFAULT 0,   -- jobs failed instead (rescued too often, or out of attempts)
    job_ids           bigint[] NOT NULL DEFAULT '{}'  -- the first 100 of those jobs
);

-- The dashboard lists the newest deaths first.
CREATE INDEX worker_deaths_recent_idx ON {schema}.worker_deaths (declared_dead_at DESC);

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

        INSERT INTO {schema}.id_marks (minute, last_id)
        SELECT date_trunc('minute', {schema}.clock()), last_value FROM {schema}.jobs_id_seq
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
