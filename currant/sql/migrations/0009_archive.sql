-- 0009_archive: the partitioned archive of succeeded jobs, for the users who
-- opt into it (`python -m currant archive enable`; docs/scaling.md).
--
-- By default a succeeded job stays in jobs until retention deletes it: at
-- thousands of jobs a second that is thousands of deletes a second, dead
-- tuples and index entries for vacuum to clean. With the archive, a worker
-- moves a success into archive (one delete from jobs, one insert
-- here) and retention drops whole partitions of archive, which leaves
-- nothing behind. This migration only creates the empty parent, the view the
-- readers use and the rotation; nothing is archived, and no partition exists,
-- until `archive enable` writes archive_layout.
--
-- archive has every column of jobs, in the same order (jobs_all relies on
-- it): a later migration that adds a column to jobs must add it here too.

CREATE TABLE {schema}.archive_layout (
    only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    partition_seconds integer NOT NULL CHECK (partition_seconds >= 60),
    enabled_at        timestamptz NOT NULL DEFAULT {schema}.clock()
);

-- Range partitions of finished_at, so that retention is "drop the partitions
-- that ended before the cutoff". No primary key: a partitioned table's unique
-- indexes must contain the partition key; ids come from jobs, unique there.
CREATE TABLE {schema}.archive (LIKE {schema}.jobs INCLUDING DEFAULTS) PARTITION BY RANGE (finished_at);
ALTER TABLE {schema}.archive ALTER COLUMN finished_at SET NOT NULL;
-- get_job and the newest-first listings (by id) find archived jobs by this.
CREATE INDEX archive_id_idx ON {schema}.archive (id);

-- Every job, live or archived, for the readers (get_job, list_jobs, stats,
-- the dashboard's job list). Without partitions the archive side of the
-- UNION ALL is an empty Append and costs nothing.
CREATE VIEW {schema}.jobs_all AS
    SELECT * FROM {schema}.jobs
    UNION ALL
    SELECT * FROM {schema}.archive;

-- Partitions from the one holding "now" to p_ahead steps ahead, and the
-- partitions that ended before now - p_keep dropped; the default partition
-- (rows whose partition did not exist, as after a long stop or a clock jump)
-- is pruned row by row. Each DDL runs in its own subtransaction under a short
-- lock_timeout: a DROP waits for the parent's ACCESS EXCLUSIVE lock, and
-- every completion that inserts queues behind it, so a DROP that cannot get it
-- at once gives up and is tried again on the next round. One caller at a time
-- (a transaction-level advisory lock); the others return at once. A NULL
-- p_keep drops nothing (archive enable).
CREATE FUNCTION {schema}.archive_rotate(p_keep double precision, p_ahead integer)
RETURNS TABLE (enabled boolean, created integer, dropped integer, purged bigint)
LANGUAGE plpgsql
SET lock_timeout = '200ms'
SET search_path = pg_catalog, pg_temp
-- The ordinary planner, whatever the calling connection set (see 0008_fleet).
SET enable_nestloop = on
SET enable_seqscan = on
SET enable_bitmapscan = on
SET plan_cache_mode = auto
AS $$
DECLARE
    step_seconds integer;
    now_ timestamptz := {schema}.clock();
    cutoff timestamptz := now_ - make_interval(secs => p_keep);
    lower_bound timestamptz;
    part record;
    upper_bound timestamptz;
BEGIN
    enabled := false; created := 0; dropped := 0; purged := 0;
    IF NOT pg_try_advisory_xact_lock(hashtext('currant.archive:' || '{schema}')) THEN
        enabled := EXISTS (SELECT 1 FROM {schema}.archive_layout);
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT l.partition_seconds INTO step_seconds FROM {schema}.archive_layout l;
    enabled := step_seconds IS NOT NULL;
    IF enabled THEN
        IF to_regclass('{schema}.archive_default') IS NULL THEN
            EXECUTE 'CREATE TABLE {schema}.archive_default PARTITION OF {schema}.archive DEFAULT';
        END IF;
        lower_bound := to_timestamp(floor(extract(epoch FROM now_) / step_seconds) * step_seconds);
        FOR i IN 0 .. p_ahead LOOP
            IF to_regclass(format('{schema}.%I', 'archive_' || to_char(lower_bound AT TIME ZONE 'UTC',
                                                                      'YYYYMMDD"t"HH24MISS'))) IS NULL THEN
                BEGIN
                    EXECUTE format('CREATE TABLE {schema}.%I PARTITION OF {schema}.archive FOR VALUES FROM (%L) TO (%L)',
                                   'archive_' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS'),
                                   lower_bound, lower_bound + make_interval(secs => step_seconds));
                    created := created + 1;
                EXCEPTION
                    -- lock_not_available: busy now, next round. check_violation:
                    -- the default partition holds rows of this range; they
                    -- expire there, and the range gets no partition of its own.
                    -- invalid_object_definition: it overlaps a partition of an
                    -- earlier partition_seconds.
                    WHEN lock_not_available OR check_violation OR invalid_object_definition THEN NULL;
                END;
            END IF;
            lower_bound := lower_bound + make_interval(secs => step_seconds);
        END LOOP;
    END IF;
    -- Expired partitions go even when the archive was disabled: what it holds
    -- still ages out.
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = '{schema}.archive'::regclass
    LOOP
        upper_bound := substring(part.bound FROM 'TO \(''([^'']*)''\)')::timestamptz;
        IF upper_bound IS NOT NULL AND upper_bound <= cutoff THEN
            BEGIN
                EXECUTE format('DROP TABLE {schema}.%I', part.relname);
                dropped := dropped + 1;
            EXCEPTION WHEN lock_not_available THEN NULL;
            END;
        END IF;
    END LOOP;
    IF to_regclass('{schema}.archive_default') IS NOT NULL THEN
        BEGIN
            DELETE FROM {schema}.archive_default WHERE finished_at < cutoff;
            GET DIAGNOSTICS purged = ROW_COUNT;
        EXCEPTION WHEN lock_not_available THEN NULL;
        END;
    END IF;
    RETURN NEXT;
END
$$;
