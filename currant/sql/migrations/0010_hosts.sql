-- 0010_hosts: which hosts LISTEN, so that one "jobs ready" wakes one host
-- (issue 17, item 3; currant/worker/turns.py).
--
-- A host (a lone worker, or the supervisor of --processes N) holds one
-- LISTEN connection. On it, it takes a slot: the lowest free session-level
-- advisory lock (key for this schema, slot) of 0..1023. The lock lives as
-- long as that connection, so a host that dies (crash, SIGKILL, the OOM
-- killer) frees its slot without anyone cleaning up; what is held right now
-- is read from pg_locks, never from a table that a dead host cannot update.
-- The table only says which queues each slot's host serves, for as long as
-- it holds the slot (a row left by a dead host is overwritten by the next
-- host to take that slot, and is never read meanwhile: readers ask for the
-- slots that notifications name).

CREATE TABLE {schema}.hosts (
    slot      integer PRIMARY KEY CHECK (slot BETWEEN 0 AND 1023),
    queues    text[] NOT NULL,
    pid       integer NOT NULL,  -- the LISTEN connection's backend, for a host that rejoins (see host_join)
    joined_at timestamptz NOT NULL DEFAULT now()
);

-- The slots held now, in order. The two-int advisory locks show in pg_locks
-- as classid = first key (as an oid: the int4's bits), objid = slot,
-- objsubid = 2, which no one-key lock (objsubid = 1, as the maintain() and
-- migration locks) can be. Only this database's: another database's schema
-- of the same name is another queue.
CREATE FUNCTION {schema}.host_slots() RETURNS integer[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(l.objid::bigint::integer ORDER BY l.objid), '{}')
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
      AND l.classid = hashtext('currant.hosts:' || '{schema}')::oid
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
$$;

-- Takes the lowest free slot for the calling session and records its queues;
-- returns the slot, or NULL when all 1024 are taken (the caller then acts on
-- every notification, as before this migration). 1024, not more: every slot
-- held is named in one "h:" notification, whose payload must stay under 8000
-- bytes (1024 slots of up to 4 digits and a comma: 5,120).
-- A host that rejoins after its connection failed without closing (a
-- half-open TCP connection: the server may not notice for a long time) names
-- its previous backend: if that backend (pid and start time) still holds one
-- of our slots, it is terminated, so its slot frees and stops getting turns
-- meant for a host that is no longer there. A role may terminate its own
-- backends; without the right to, the old slot stays until the server finds
-- the connection dead (the TCP keepalives the caller set), and its turns
-- until then are found by the other hosts' polls.
CREATE FUNCTION {schema}.host_join(p_queues text[], p_previous_pid integer, p_previous_start timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key integer := hashtext('currant.hosts:' || '{schema}');
BEGIN
    -- The pid and the backend's start time together: a pid alone may have
    -- been reused by another host's new connection, perhaps on the same slot.
    IF p_previous_pid IS NOT NULL AND p_previous_pid <> pg_backend_pid() AND EXISTS (
        SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted AND l.classid = key::oid
          AND l.pid = p_previous_pid AND a.backend_start = p_previous_start
    ) THEN
        BEGIN
            PERFORM pg_terminate_backend(p_previous_pid);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
    END IF;
    FOR s IN 0 .. 1023 LOOP
        IF pg_try_advisory_lock(key, s) THEN
            INSERT INTO {schema}.hosts (slot, queues, pid) VALUES (s, p_queues, pg_backend_pid())
            ON CONFLICT (slot) DO UPDATE SET queues = excluded.queues, pid = excluded.pid, joined_at = now();
            RETURN s;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
