-- What currant.testing.drain sends besides the worker's own statements
-- (claim, claim_limited, complete_*, register_worker, maintain, ...): the
-- test clock. Tests only: production never moves the clock.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter.

-- name: use_test_clock
-- clock() honours the session's currant.clock_offset only once the schema's
-- owner turned the test clock on (0003_harden); it stays on for the schema,
-- which changes nothing for sessions that set no offset.
SELECT {schema}.use_test_clock(true)

-- name: set_clock_offset
-- Moves this session's database clock: every time decision of the drain's
-- statements (promotion, retry delays, rate-limit tokens) reads clock(),
-- so scheduled jobs come due without anyone sleeping. Session-wide, not
-- local to a transaction: it outlives the drain on a caller's connection
-- (undone only if the caller's transaction rolls back), which the next
-- drain reads (clock_offset) and goes on from.
SELECT pg_catalog.set_config('currant.clock_offset', make_interval(secs => %(seconds)s)::text, false)

-- name: clock_offset
-- Seconds this session's clock is already moved (0 if never): a drain goes on
-- from there, so the clock a test sees only ever moves forward.
SELECT coalesce(extract(epoch FROM nullif(current_setting('currant.clock_offset', true), '')::interval), 0)::float8

-- name: drain_savepoint
-- Before each job a drain runs inside a caller's transaction: a handler whose
-- statement fails (an IntegrityError) aborts only its own work, and the drain
-- can still record the attempt.
SAVEPOINT currant_drain_job

-- name: drain_rollback_to_savepoint
-- The handler left the transaction aborted: undo its work, keep the caller's.
ROLLBACK TO SAVEPOINT currant_drain_job

-- name: drain_release_savepoint
-- The handler's work stands, as part of the caller's transaction.
RELEASE SAVEPOINT currant_drain_job

-- name: drop_test_schema
-- The pytest plugin's currant_app fixture, after its test: the schema it made
-- for that test, whatever state a failed migration left it in.
DROP SCHEMA IF EXISTS {schema} CASCADE
