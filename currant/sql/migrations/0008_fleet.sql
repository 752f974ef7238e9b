-- 0008_fleet: maintain() brings its own planner settings.
--
-- A worker process now holds two connections (claims, which also carry the
-- heartbeat; completions), not four: 50 processes were 200 backends. The
-- claims connection runs under the claim path's planner guards
-- (enable_nestloop/seqscan/bitmapscan off, force_custom_plan; see
-- WORK_CONNECTION_OPTIONS and BENCHMARKS.md "Planner traps"), and maintain()
-- under them took 74 ms instead of 0.5 ms: its sweeps want the planner's
-- ordinary choices. Function-level SET clauses give it those whatever the
-- calling session set, and they end with the call, so they also hold through
-- a transaction-mode pooler, where the session is not the caller's to set.
-- (A later CREATE OR REPLACE of maintain() must repeat these clauses: it
-- replaces the function's settings with its own.)

ALTER FUNCTION {schema}.maintain(
    bigint, text[], bigint[], double precision, integer, double precision, double precision, integer, text,
    text[], text[], text[], bigint[]
)
    SET enable_nestloop = on
    SET enable_seqscan = on
    SET enable_bitmapscan = on
    SET plan_cache_mode = auto;
