"""LISTEN/NOTIFY wake-ups on a connection of their own.

Notifications are an optimisation, never the delivery path: the worker polls
anyway, so a notification lost while this connection was down costs at most
one poll interval. After every (re)connect the listener LISTENs first and then
asks for one claim, so nothing committed in between waits for the poll.

Payloads carry no job data and cannot be confused whatever a queue is called:
``r:<queue>`` (jobs ready now), ``d:<epoch>:<queue>`` (a job becomes due
then), ``c:<job id>`` (cancel requested).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from .. import faults
from ..backoff import Backoff
from .links import GaveUp, Link

log = logging.getLogger("currant.worker")


class Listener:
    """LISTENs on the app's channel and turns notifications into calls.

    Silence longer than the link's round-trip timeout makes it check its
    connection with ``health_check``, so a half-open TCP connection is found
    and replaced; the query also says whether jobs are ready, and so doubles
    as that moment's fallback poll.
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

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            conn = await self.link.connection()
            try:
                faults.point("listener_reconnect")
                await conn.execute(f'LISTEN "{self.channel}"')
                backoff.reset()
                self.link.mark_up()
                self.connected.set()
                self.on_connected()
                while True:
                    async for notify in conn.notifies(timeout=self.link.timeout):
                        self._dispatch(notify.payload)
                    # No notification for a while: prove the connection is alive
                    # (the query also tells whether work is waiting).
                    cur = await asyncio.wait_for(conn.execute(*self.health_check), timeout=min(5.0, self.link.timeout))
                    row = await cur.fetchone()
                    self.on_health(bool(row and row[0]))
            except (asyncio.CancelledError, GaveUp):
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.connected.clear()
                self.link.mark_down(exc)
                await self.link.drop(siblings=False)
                await backoff.wait()

    def _dispatch(self, payload: str) -> None:
        dispatch(payload, self.on_ready, self.on_due, self.on_cancel)


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
    wakes the next child. If the supervisor's wake-ups end while it lives (its
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
    ) -> None:
        self.fd = fd
        self.on_orphaned = on_orphaned
        self._parent = int(os.environ.get(SUPERVISOR_PID_ENV) or os.getppid())
        self.on_ready = on_ready
        self.on_due = on_due
        self.on_cancel = on_cancel
        self.on_connected = on_connected
        self._writer: asyncio.StreamWriter | None = None
        self._free = True  # what the supervisor last heard: a lane is free

    async def run(self) -> None:
        os.set_inheritable(self.fd, False)  # not to the jobs' own subprocesses: the socket must end with us
        reader, self._writer = await asyncio.open_connection(sock=socket.socket(fileno=self.fd))
        try:
            async for line in reader:
                payload = line.decode("utf-8", "replace").rstrip("\n")
                if payload == CLAIM_ONCE:
                    self.on_connected()
                else:
                    dispatch(payload, self.on_ready, self.on_due, self.on_cancel)
        except OSError as exc:  # the supervisor died: wake-ups are an optimisation, the poll goes on
            log.debug("wake-up socket: %s", exc)
        finally:
            self._writer.close()
            self._writer = None
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
