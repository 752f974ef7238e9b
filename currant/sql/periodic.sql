-- Periodic (cron) jobs: registration and the compare-and-set of each tick.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter. A
-- statement starts at "-- name: <name>"; the comment lines after it say why
-- it is shaped the way it is.

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
