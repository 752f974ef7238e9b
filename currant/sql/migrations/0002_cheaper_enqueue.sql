-- 0002_cheaper_enqueue: what a bulk enqueue pays per row, made smaller without
-- giving up any feature. Measured by counting the server's instructions in
-- COPY (callgrind, `benchmarks/instructions.py copy`, BENCHMARKS.md); index
-- maintenance was 70 % of them and jobs_claim_idx the largest single part.

-- The claim index loses its priority column. A key of (queue text, priority,
-- id) costs every insert a three-column descent in which each column after
-- the text one is found by walking the tuple (the offsets after a varlena are
-- not cached); (queue, id) is one comparison short and 8 bytes narrower.
-- Jobs with a priority other than 0, the rare case, are in a second, small
-- index that keeps the priority order; the claim takes them from there first
-- (priority > 0), then FIFO from the main index (priority = 0), then the
-- negative ones (see the claim statement). Every key in both indexes is
-- unique (id is in it), so deduplication, which PostgreSQL tries on every
-- full leaf page before it splits it, could never save space: it is off.
DROP INDEX {schema}.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, id) WITH (deduplicate_items = off)
    WHERE state = 'queued';
CREATE INDEX jobs_claim_priority_idx ON {schema}.jobs (queue, priority DESC, id) WITH (deduplicate_items = off)
    WHERE state = 'queued' AND priority <> 0;

-- Same rules, cheaper test: length() counts the characters of a UTF-8 string
-- one by one on every insert, while a name of at most 200 bytes has at most
-- 200 characters, so the count is needed only for longer ones.
ALTER TABLE {schema}.jobs
    DROP CONSTRAINT jobs_queue_name,
    DROP CONSTRAINT jobs_task_name,
    ADD CONSTRAINT jobs_queue_name CHECK (queue <> '' AND (octet_length(queue) <= 200 OR length(queue) <= 200)),
    ADD CONSTRAINT jobs_task_name CHECK (task <> '' AND (octet_length(task) <= 200 OR length(task) <= 200));
