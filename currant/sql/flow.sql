-- Flow control: jobs that wait for others (dependencies, groups, chains) and
-- paused queues. The release of waiting jobs is a trigger (migration
-- 0006_flow), so that it happens in the transaction that finishes a parent,
-- whatever finishes it.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter.

-- name: depend
-- Make each of the just-enqueued jobs (children, inserted as 'waiting' in
-- this transaction) wait for each parent. The parents are locked (by marking
-- them dependents), so that none can finish between this statement seeing it
-- unfinished and the link being in place: a completion waits for this
-- transaction, and its trigger then sees the links. Parents already finished
-- count at once: succeeded ones are done (their results passed if asked), a
-- failed or cancelled one cancels the children unless they run anyway.
-- Returns the parents that do not exist (the caller refuses those) and the
-- queues of children queued at once (to wake).
WITH parents AS (
    UPDATE {schema}.jobs p SET dependents = true
    WHERE p.id = ANY(%(parents)s::bigint[])
    RETURNING p.id, p.state, p.result
), open_parents AS (
    SELECT id FROM parents WHERE state NOT IN ('succeeded', 'failed', 'cancelled')
), failed_parent AS (
    SELECT min(id) AS id, min(state::text) AS state FROM parents WHERE state IN ('failed', 'cancelled')
), done_parents AS (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(result ORDER BY id) AS results
    FROM parents WHERE state = 'succeeded'
), links AS (
    INSERT INTO {schema}.dependencies (parent_id, job_id)
    SELECT o.id, c.id FROM open_parents o CROSS JOIN unnest(%(children)s::bigint[]) AS c(id)
    RETURNING job_id
), children AS (
    UPDATE {schema}.jobs c SET
        on_parent_failure = %(on_failure)s::"char",
        pass_results = %(pass_results)s::"char",
        parents_left = (SELECT count(*) FROM open_parents),
        state = CASE
            WHEN (SELECT id FROM failed_parent) IS NOT NULL AND %(on_failure)s::"char" <> 'r' THEN 'cancelled'
            WHEN (SELECT count(*) FROM open_parents) = 0 THEN 'queued'
            ELSE 'waiting' END::{schema}.job_state,
        finished_at = CASE WHEN (SELECT id FROM failed_parent) IS NOT NULL AND %(on_failure)s::"char" <> 'r'
                           THEN {schema}.clock() END,
        errors = CASE WHEN (SELECT id FROM failed_parent) IS NOT NULL AND %(on_failure)s::"char" <> 'r'
                      THEN jsonb_build_array(jsonb_build_object(
                          'attempt', 0, 'at', {schema}.clock(), 'traceback', NULL,
                          'error', (SELECT 'ParentFailed: job ' || id || ' ended ' || state FROM failed_parent)))
                      END,
        input_ids = CASE WHEN %(pass_results)s::"char" IS NOT NULL THEN (SELECT ids FROM done_parents) END,
        inputs = CASE WHEN %(pass_results)s::"char" IS NOT NULL THEN (SELECT results FROM done_parents) END
    WHERE c.id = ANY(%(children)s::bigint[]) AND c.state = 'waiting'
    RETURNING c.queue, c.state
)
SELECT ARRAY(SELECT unnest(%(parents)s::bigint[]) EXCEPT SELECT id FROM parents) AS missing,
       ARRAY(SELECT DISTINCT queue FROM children WHERE state = 'queued') AS ready_queues

-- name: create_group
-- A group's row: its size and, once enqueued, its callback.
INSERT INTO {schema}.groups (size) VALUES (%(size)s) RETURNING id

-- name: set_group_callback
UPDATE {schema}.groups SET callback_id = %(callback)s WHERE id = %(id)s

-- name: tag_group
-- Members are tagged after their COPY: the group index holds only them.
UPDATE {schema}.jobs SET group_id = %(id)s WHERE id = ANY(%(ids)s::bigint[])

-- name: get_group
-- A group's progress: members by state (from jobs_group_idx) and its callback.
SELECT g.id, g.size, g.callback_id, g.created_at,
       (SELECT state::text FROM {schema}.jobs WHERE id = g.callback_id) AS callback_state,
       coalesce((SELECT jsonb_object_agg(state, n) FROM (
           SELECT state::text AS state, count(*) AS n FROM {schema}.jobs WHERE group_id = g.id GROUP BY state
       ) AS counts), '{}'::jsonb) AS states
FROM {schema}.groups g WHERE g.id = %(id)s

-- name: pause_queue
INSERT INTO {schema}.queues (name) VALUES (%(queue)s) ON CONFLICT (name) DO NOTHING RETURNING name

-- name: resume_queue
-- Workers polling this queue find its jobs at their next claim; a notification
-- wakes idle ones at once.
WITH gone AS (
    DELETE FROM {schema}.queues WHERE name = %(queue)s RETURNING name
)
SELECT name, pg_catalog.pg_notify(%(channel)s, 'r:' || name) FROM gone

-- name: paused_queues
SELECT name, paused_at FROM {schema}.queues ORDER BY name
