-- Host turns (0010_hosts; currant/worker/turns.py): every LISTENing host
-- takes a slot, announces who holds slots on the channel ("h:<slots>"), and
-- each "jobs ready" is then acted on by one host in turn, not by all. These
-- run on the LISTEN connection, which is always a direct one (never through a
-- transaction-mode pooler): the slot is a session-level advisory lock.
--
-- Statements by name: currant.sql loads every .sql file beside this one
-- (not the migrations) into one dict. "{schema}" becomes the validated,
-- quoted schema name and every value is a bound %(name)s parameter. A
-- statement starts at "-- name: <name>"; the comment lines after it say why
-- it is shaped the way it is.

-- name: host_keepalive
-- The server's side of the LISTEN connection finds a peer that vanished
-- without closing (a host cut off, a NAT that forgot the flow) within about
-- half a minute instead of the system's default two hours: until it does,
-- that host keeps its slot, and its turns go unanswered until another host
-- polls. tcp_user_timeout covers a connection with notifications in flight
-- (keepalives only probe an idle one). Session settings, on a direct
-- connection; ignored on a Unix socket.
SELECT pg_catalog.set_config('tcp_keepalives_idle', '10', false),
       pg_catalog.set_config('tcp_keepalives_interval', '5', false),
       pg_catalog.set_config('tcp_keepalives_count', '3', false),
       pg_catalog.set_config('tcp_user_timeout', '30000', false)

-- name: host_join
-- After LISTEN, so that every "h:" sent after we hold the slot reaches us.
-- previous_pid, previous_start: the backend of this host's last LISTEN
-- connection, if any (a half-open one is terminated, see the function); the
-- statement returns this connection's, for the next time.
SELECT {schema}.host_join(%(queues)s, %(previous_pid)s, %(previous_start)s), a.pid, a.backend_start
FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()

-- name: host_announce
-- The slots held now, to every host in one notification, in the channel's
-- one order: every host resets its turns at the same point of the same
-- sequence, so they all agree on whose turn each later "r:" is. Read from the
-- locks in the same statement that sends them; a slot taken meanwhile is
-- announced by its own host.
SELECT s.slots, pg_catalog.pg_notify(%(channel)s, 'h:' || pg_catalog.array_to_string(s.slots, ','))
FROM (SELECT {schema}.host_slots() AS slots) AS s

-- name: host_slots
-- Every couple of seconds: a host that died freed its slot without telling
-- anyone, and this is how the others notice (then one of them announces).
-- A host that knows of no other member skips it.
SELECT {schema}.host_slots()

-- name: host_queues
-- The queues of the slots an "h:" named. Which slots are members comes from
-- the notification (the same for every host), not from what is held when
-- each host asks (which differs by a few milliseconds between hosts).
SELECT slot, queues FROM {schema}.hosts WHERE slot = ANY(%(slots)s)
