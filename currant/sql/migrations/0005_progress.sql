-- 0005_progress: a running job's last progress report (JobContext.progress()).
-- A nullable column with no default is added without rewriting the table, and
-- the bulk enqueue's COPY does not name it: enqueue pays nothing for it.
ALTER TABLE {schema}.jobs ADD COLUMN progress jsonb;
