"""LISTEN/NOTIFY wake-ups on a connection of their own.

Notifications are an optimisation, never the delivery path: the worker polls
anyway, so a notification lost while this connection was down costs at most
one poll interval. After every (re)connect the listener LISTENs first and then
asks for one claim, so nothing committed in between waits for the poll.

Payloads carry no job data and cannot be confused whatever a queue is called:
``r:<queue>`` (jobs ready now), ``d:<epoch>:<queue>`` (a job becomes due
then), ``c:<job id>`` (cancel requested), ``h:<slot>,...`` (the hosts taking
turns at "jobs ready", :mod:`currant.worker.turns`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from .. import faults
from ..backoff import Backoff
from .links import Connection, GaveUp, Link, within
from .turns import Turns, parse_slots

log = logging.getLogger("currant.worker")

# How often a host taking turns reads which slots are held: a member that
# died keeps getting turns (found only by the others' polls) until then.
CHECK_EVERY = 2.0


class Listener:
    """LISTENs on the app's channel and turns notifications into calls.

    Every ``link.timeout`` (or ``poll_every``, if shorter) it checks its
    connection with ``health_check``, so a half-open TCP connection is found
    and replaced; the query also says whether jobs are ready, and so doubles
    as that moment's fallback poll (a supervisor's, for its whole host).

    Given the app's statements (``sql``) and the queues this host serves, it
    takes turns with the other hosts (:mod:`currant.worker.turns`): after
    LISTEN it joins (a slot) and announces the members; a "jobs ready" that is
    another host's turn is not passed on; every :data:`CHECK_EVERY` seconds,
    while it knows of another member, it looks for members that died. Without
    them, or on a schema without the hosts table, it acts on every notification.
    """

    def __init__(
        self,
        link: Link,
        channel: str,
        on_ready: Callable[[str], None],
        on_due: Callable[[str, float], None],
        on_cancel: Callable[[int], None],
        on_connected: Callable[[], None],
        health_check: tuple[str, dict[str, Any]] = ("SELECT false", {}),
        on_health: Callable[[bool], None] = lambda ready: None,
        sql: Mapping[str, str] | None = None,
        queues: Sequence[str] = (),
        on_members: Callable[[], None] = lambda: None,
        poll_every: float | None = None,
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.link = link
        self.channel = channel
        self.on_ready = on_ready
        self.on_due = on_due
        self.on_cancel = on_cancel
        self.on_connected = on_connected
        self.health_check = health_check
        self.on_health = on_health
        self.connected = asyncio.Event()
        self.sql = sql if sql is not None and "host_join" in sql else None
        self.queues = list(queues)
        self.turns = Turns()
        self.on_members = on_members  # the members (self.turns) changed
        # The health check's period: the link's timeout, or, for a supervisor
        # polling for its whole host, its processes' --poll-interval.
        self.poll_every = poll_every
        self.on_lost = on_lost  # the connection failed: no LISTEN (and no health check) until it is back
        # This host's last LISTEN backend (pid, start): a rejoin ends it if it
        # still holds a slot (its connection half-open, see host_join).
        self._backend: tuple[Any, Any] = (None, None)
        self._missing_logged = False
        self._join_delay = CHECK_EVERY / 2  # doubled by every failed join (no hosts table yet)
        self._join_again = 0.0
        self._queried = False  # a statement other than LISTEN ran since the last LISTEN

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            conn = await self.link.connection()
            try:
                faults.point("listener_reconnect")
                await conn.execute(f'LISTEN "{self.channel}"')
                await self._join(conn)
                backoff.reset()
                self.link.mark_up()
                self.connected.set()
                self.on_connected()
                await self._listen(conn)
            except (asyncio.CancelledError, GaveUp):
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.turns.joined(None)  # we miss notifications from now on: out of step
                self.on_members()
                self.connected.clear()
                self.on_lost()
                self.link.mark_down(exc)
                await self.link.drop(siblings=False)
                await backoff.wait()

    async def _listen(self, conn: Connection) -> None:
        now = time.monotonic()
        health_every = min(self.poll_every or self.link.timeout, self.link.timeout)
        next_health = now + health_every
        next_check = now + CHECK_EVERY if self.sql is not None else math.inf
        while True:
            if self._queried:
                # The connection's last statement is what pg_stat_activity
                # shows: LISTEN again (a no-op) so it still reads as the
                # listener it is, to operators and to the tests that wait for it.
                await self._query(conn, f'LISTEN "{self.channel}"', None, rows=False)
                self._queried = False
            wait = max(0.0, min(next_health, next_check) - time.monotonic())
            # stop_after=1: the generator ends after a whole packet of
            # notifications (leaving it mid-packet would drop the packet's
            # rest), so that the connection is free for a query when one needs
            # it; what arrives meanwhile libpq keeps for the next call.
            batch = [notify.payload async for notify in conn.notifies(timeout=wait, stop_after=1)]
            for payload in batch:
                await self._handle(conn, payload)
            if batch:
                # Let the tasks just woken (the claimer) send their statements
                # before this one goes back into notifies(): otherwise idle
                # pickup waits for this loop's turn (0.1 ms, BENCHMARKS.md).
                await asyncio.sleep(0)
            now = time.monotonic()
            if now >= next_check:
                # Also while notifications flow: a dead member's turns go
                # unanswered until the others notice it.
                next_check = now + CHECK_EVERY
                await self._check(conn)
            if now >= next_health:
                next_health = now + health_every
                # Prove the connection alive (the query also tells whether work is waiting).
                rows = await self._query(conn, *self.health_check)
                self.on_health(bool(rows and rows[0][0]))

    async def _query(
        self, conn: Connection, statement: str, params: Mapping[str, Any] | None, rows: bool = True
    ) -> list[Any]:
        """One statement, within a deadline: a connection that stopped answering is replaced."""
        self._queried = True
        # within(), not asyncio.wait_for: on Python 3.11 wait_for loses a
        # cancellation that lands as the statement completes, and the worker,
        # stopping, would wait for this task forever.
        cur = await within(min(5.0, self.link.timeout), conn.execute(statement, params))
        return list(await cur.fetchall()) if rows else []

    async def _handle(self, conn: Connection, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "r":
            if self.turns.ready(rest):
                self.on_ready(rest)
        elif kind == "h":
            if self.sql is None or self.turns.slot is None:
                return  # not taking turns: everything is ours
            slots = parse_slots(rest)
            if slots is None:
                log.warning("listener: ignoring malformed notification %r", payload[:100])
                return
            rows = await self._query(conn, self.sql["host_queues"], {"slots": slots})
            orphaned = self.turns.announced(slots, {slot: queues for slot, queues in rows})
            self.on_members()
            if self.turns.left_out:
                await self._announce(conn)
            for queue in orphaned:
                self.on_ready(queue)
        else:
            dispatch(payload, self.on_ready, self.on_due, self.on_cancel)

    async def _join(self, conn: Connection) -> None:
        """Take a slot and tell everyone (a schema without the hosts table: act on
        every notification, and try again at the next check, as a migration may
        come)."""
        if self.sql is None:
            return
        self.turns.joined(None)
        self.on_members()
        try:
            try:
                await self._query(conn, self.sql["host_keepalive"], None)
            except psycopg.OperationalError:
                raise
            except psycopg.DatabaseError as exc:  # a server without one of the settings: the defaults it is
                log.debug("listener: TCP keepalive settings refused: %s", exc)
            pid, start = self._backend
            params = {"queues": self.queues, "previous_pid": pid, "previous_start": start}
            ((slot, *backend),) = await self._query(conn, self.sql["host_join"], params)
        except psycopg.OperationalError:
            raise  # the connection: reconnect
        except psycopg.DatabaseError as exc:
            # Most likely a supervisor that started before its children
            # migrated the schema. Tried again later, less and less often: a
            # failing statement is an ERROR in the server's log.
            self._join_delay = min(60.0, self._join_delay * 2)
            self._join_again = time.monotonic() + self._join_delay
            if not self._missing_logged:
                self._missing_logged = True
                log.info("not taking turns with other hosts (%s); claiming on every notification", exc)
            return
        self._backend = (backend[0], backend[1])
        self.turns.joined(slot)
        if slot is None:  # every slot taken: act on everything, and look again later
            self._join_again = time.monotonic() + 60.0
            return
        self._join_delay = CHECK_EVERY / 2
        await self._announce(conn)

    async def _announce(self, conn: Connection) -> None:
        assert self.sql is not None
        await self._query(conn, self.sql["host_announce"], {"channel": self.channel})

    async def _check(self, conn: Connection) -> None:
        assert self.sql is not None
        if self.turns.slot is None:
            if time.monotonic() >= self._join_again:
                await self._join(conn)
            return
        if self.turns.alone:
            return  # an idle lone host sends no statement for it (BENCHMARKS.md, idle worker)
        ((held,),) = await self._query(conn, self.sql["host_slots"], None)
        if self.turns.should_announce(held):
            await self._announce(conn)


def dispatch(
    payload: str,
    on_ready: Callable[[str], None],
    on_due: Callable[[str, float], None],
    on_cancel: Callable[[int], None],
) -> None:
    """One notification's payload turned into its call."""
    kind, _, rest = payload.partition(":")
    try:
        if kind == "r":
            on_ready(rest)
        elif kind == "d":
            when, _, queue = rest.partition(":")
            on_due(queue, float(when))
        elif kind == "c":
            on_cancel(int(rest))
        else:
            raise ValueError(kind)
    except ValueError:
        log.warning("listener: ignoring malformed notification %r", payload[:100])


# The supervisor's word for "LISTEN is (back) up: claim once", which no
# notification payload can be.
CLAIM_ONCE = "*"
# The supervisor's word for "other hosts serve this host's queues" ("o:1") or
# not ("o:0"): a child whose claim came back full then NOTIFYs too.
OTHER_HOSTS = "o:"
# The supervisor's word for "my LISTEN is up and I poll for the host every
# --poll-interval" ("p:1") or "poll yourselves" ("p:0"): an idle host then
# sends one poll per interval, not one per process.
HOST_POLLS = "p:"
# Where a supervised child finds its end of the supervisor's wake-up socket.
WAKEUP_FD_ENV = "CURRANT_WAKEUP_FD"
# Its supervisor's pid: a child started after the supervisor died has init as
# its parent from the start, so its own first getppid() cannot tell.
SUPERVISOR_PID_ENV = "CURRANT_SUPERVISOR_PID"


class HostWakeups:
    """A supervised child's wake-ups (``--processes N``): the supervisor holds the
    host's one LISTEN connection and hands each "jobs ready" to one child at a
    time, over a socket per child (:mod:`currant.fleet`), so one NOTIFY does not
    wake every idle process into an empty claim. A child whose claim came back
    full says so (:meth:`pass_on`): more may be waiting, and the supervisor
    wakes the next child. While the supervisor's LISTEN is up it also polls
    for the host (``p:1``), and the child's own fallback poll waits for its
    heartbeat instead. If the supervisor's wake-ups end while it lives (its
    LISTEN refused) the child keeps polling; if the supervisor itself is gone
    (killed: the child was handed to init) the child stops as on SIGTERM, so a
    killed supervisor leaves no unmanaged workers behind (a restarted one
    starts its own).
    """

    def __init__(
        self,
        fd: int,
        on_ready: Callable[[str], None],
        on_due: Callable[[str, float], None],
        on_cancel: Callable[[int], None],
        on_connected: Callable[[], None],
        on_orphaned: Callable[[], None] | None = None,
        on_host_polls: Callable[[bool], None] = lambda polls: None,
    ) -> None:
        self.fd = fd
        self.on_host_polls = on_host_polls
        self.on_orphaned = on_orphaned
        self._parent = int(os.environ.get(SUPERVISOR_PID_ENV) or os.getppid())
        self.on_ready = on_ready
        self.on_due = on_due
        self.on_cancel = on_cancel
        self.on_connected = on_connected
        self._writer: asyncio.StreamWriter | None = None
        self._free = True  # what the supervisor last heard: a lane is free
        self._others = False  # other hosts serve our queues (the supervisor's "o:1")

    async def run(self) -> None:
        os.set_inheritable(self.fd, False)  # not to the jobs' own subprocesses: the socket must end with us
        reader, self._writer = await asyncio.open_connection(sock=socket.socket(fileno=self.fd))
        try:
            async for line in reader:
                payload = line.decode("utf-8", "replace").rstrip("\n")
                if payload == CLAIM_ONCE:
                    self.on_connected()
                elif payload.startswith(OTHER_HOSTS):
                    self._others = payload == f"{OTHER_HOSTS}1"
                elif payload.startswith(HOST_POLLS):
                    self.on_host_polls(payload == f"{HOST_POLLS}1")
                else:
                    dispatch(payload, self.on_ready, self.on_due, self.on_cancel)
        except OSError as exc:  # the supervisor died: wake-ups are an optimisation, the poll goes on
            log.debug("wake-up socket: %s", exc)
        finally:
            self._writer.close()
            self._writer = None
            self.on_host_polls(False)  # nobody polls for us any more
        if await self._orphaned():
            log.warning("the supervisor (pid %d) is gone: stopping as on SIGTERM", self._parent)
            if self.on_orphaned is not None:
                self.on_orphaned()
            return
        log.warning("the supervisor's wake-ups ended; finding new jobs by polling")

    async def _orphaned(self) -> bool:
        """Whether our parent is gone. A dying process closes its sockets before
        its children are handed to another parent: give that a moment."""
        for _ in range(20):
            if os.getppid() != self._parent:
                return True
            await asyncio.sleep(0.05)  # the kernel's reparenting, not a job's state
        return False

    def pass_on(self, queue: str) -> None:
        """Our claim took a full batch from ``queue``: let the supervisor wake another child."""
        self._send(f"r:{queue}")

    def others_serve(self, queue: str) -> bool:
        """Whether a full claim should also wake another host (the claimer's ``spread``)."""
        return self._others

    def capacity(self, free: bool) -> None:
        """Whether a lane is free, sent when it changes: the supervisor wakes a
        child with a free lane first, so a job does not wait in the prefetch
        queue of a process whose lanes are all busy while another idles."""
        if free != self._free:
            self._free = free
            self._send(f"f:{int(free)}")

    def _send(self, line: str) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(f"{line}\n".encode())
