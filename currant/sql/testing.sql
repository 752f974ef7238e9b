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
-- so scheduled jobs come due without anyone sleeping. Session-wide (not
-- local to a transaction): the drain runs in autocommit.
SELECT pg_catalog.set_config('currant.clock_offset', make_interval(secs => %(seconds)s)::text, false)
