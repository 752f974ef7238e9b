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
