"""The host's one LISTEN, held by the supervisor of ``--processes N``.

Without it every worker process held a LISTEN connection of its own, and one
NOTIFY woke them all: with 50 idle processes, 49 ran an empty claim. Here the
supervisor listens once for the host and hands each "jobs ready" to one child,
in turn, preferring children with a free lane (a job woken into the prefetch
queue of a process whose lanes are all busy would wait there while another
idles); a child whose claim came back full passes the wake-up on (more may be
waiting), so a burst of work still spreads over the children within one claim
round trip each, while at low load one job costs one claim. Cancellations go
to every child (only the one running the job acts); "due" goes to one (one
heartbeat promotes for all).

Each child gets one end of a socket pair (its descriptor in
``$CURRANT_WAKEUP_FD``, see :class:`currant.worker.wakeup.HostWakeups`).
Lines go both ways: supervisor to child, a notification payload,
:data:`~currant.worker.wakeup.CLAIM_ONCE`, or ``o:1`` / ``o:0`` (other hosts
serve this host's queues, or not: a child whose claim came back full then
NOTIFYs too, so a burst reaches the next host in turn, see
:mod:`currant.worker.turns`), or ``p:1`` / ``p:0`` (the supervisor's LISTEN
is up and it polls for the host every ``--poll-interval``, so an idle host
sends one poll per interval, not one per process; or it is not, and each
child polls as a lone worker does); child to supervisor, ``r:<queue>``
("my claim was full: wake another") and ``f:1`` / ``f:0`` (a lane is free, or
none is: sent when that changes).

The LISTEN loop is the worker's own :class:`~currant.worker.wakeup.Listener`
on a :class:`~currant.worker.links.Link` (the one reconnect and backoff
policy), run on an event loop in a thread: the supervisor's main thread keeps
its simple child-watching loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .worker.links import Link
from .worker.wakeup import CLAIM_ONCE, HOST_POLLS, OTHER_HOSTS, Listener

log = logging.getLogger("currant.supervisor")


@dataclass
class ListenSpec:
    """What the host's listener needs from the app and the worker's settings."""

    dsn: str
    channel: str
    queues: list[str]
    health_check: tuple[str, dict[str, Any]]
    timeout: float
    # The app's statements, for taking turns with the other hosts (currant.worker.turns).
    sql: Mapping[str, str]
    # The processes' --poll-interval: the supervisor polls for the host that
    # often (has_ready) while its LISTEN is up, and they do not.
    poll_interval: float
    served: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.served = set(self.queues)


class HostListener:
    """LISTENs for the host and wakes one child at a time."""

    def __init__(self, spec: ListenSpec) -> None:
        self.spec = spec
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._children: dict[int, asyncio.StreamWriter] = {}
        self._busy: set[int] = set()  # children that said every lane is taken
        self._turn = -1  # the child woken last
        self._listener: Listener | None = None
        self._others = False  # what the children were told: other hosts serve our queues
        self._polls = False  # what the children were told: we poll for them (LISTEN is up)

    def start(self) -> None:
        threading.Thread(target=self._thread, name="currant-host-listener", daemon=True).start()
        if not self._started.wait(10):
            raise RuntimeError("the host listener's event loop did not start")

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 - a refused DSN: say so; the children poll on
            log.error("the host's LISTEN stopped (%s); the worker processes find new jobs by polling", exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started.set()
        spec = self.spec
        link = Link("listen", spec.dsn, timeout=spec.timeout, give_up=lambda what, down_for: None)
        listener = Listener(
            link,
            spec.channel,
            on_ready=self._ready,
            on_due=lambda queue, when: self.wake_one(f"d:{when!r}:{queue}"),
            on_cancel=lambda job_id: self.wake_all(f"c:{job_id}"),
            on_connected=self._connected,
            health_check=spec.health_check,
            on_health=lambda ready: self.wake_one(CLAIM_ONCE) if ready else None,
            sql=spec.sql,
            queues=spec.queues,
            on_members=self._members_changed,
            poll_every=spec.poll_interval,
            on_lost=lambda: self._polling(False),
        )
        self._listener = listener
        try:
            await listener.run()
        except Exception as exc:  # noqa: BLE001 - a refused DSN: say so, and keep serving the children
            log.error("the host's LISTEN stopped (%s); the worker processes find new jobs by polling", exc)
        self._polling(False)
        # The loop lives on without LISTEN: the children keep their sockets,
        # which tell them when this supervisor is gone, and restarted children
        # still get one.
        await asyncio.Event().wait()

    def _connected(self) -> None:
        """LISTEN is (back) up: every child claims once (a notification may
        have been missed meanwhile), and we poll for the host from now on."""
        self.wake_all(CLAIM_ONCE)
        self._polling(True)

    def _polling(self, polls: bool) -> None:
        if polls != self._polls:
            self._polls = polls
            self.wake_all(f"{HOST_POLLS}{int(polls)}")

    def _members_changed(self) -> None:
        """Tell the children whether other hosts serve our queues: a child whose
        claim came back full then wakes another host too (NOTIFY), not only
        another child."""
        turns = self._listener.turns if self._listener is not None else None
        others = turns is not None and any(turns.others_serve(queue) for queue in self.spec.queues)
        if others != self._others:
            self._others = others
            self.wake_all(f"{OTHER_HOSTS}{int(others)}")

    def attach(self, slot: int) -> socket.socket:
        """A new child in ``slot``: returns the end of its socket pair to hand it
        (inheritable; the caller closes its copy once the child has started)."""
        ours, theirs = socket.socketpair()
        theirs.set_inheritable(True)
        assert self._loop is not None
        served = asyncio.run_coroutine_threadsafe(self._serve(slot, ours), self._loop)
        served.add_done_callback(_log_failure)
        return theirs

    async def _serve(self, slot: int, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        self._children[slot] = writer
        self._busy.discard(slot)  # a new child starts free (its predecessor may have said otherwise)
        if self._others:
            writer.write(f"{OTHER_HOSTS}1\n".encode())
        if self._polls:
            writer.write(f"{HOST_POLLS}1\n".encode())
        try:
            async for line in reader:
                kind, _, rest = line.decode("utf-8", "replace").rstrip("\n").partition(":")
                if kind == "r":
                    self._ready(rest, after=slot)
                elif kind == "f":
                    (self._busy.discard if rest == "1" else self._busy.add)(slot)
        finally:
            if self._children.get(slot) is writer:
                del self._children[slot]
                self._busy.discard(slot)
            writer.close()

    def _ready(self, queue: str, after: int | None = None) -> None:
        if queue in self.spec.served:
            self.wake_one(f"r:{queue}", after)

    def wake_one(self, payload: str, after: int | None = None) -> None:
        """The next child in turn (after ``after``, the child passing a wake-up on),
        among those with a free lane if any has one."""
        slots = sorted(slot for slot, writer in self._children.items() if not writer.is_closing())
        free = [slot for slot in slots if slot not in self._busy]
        slots = free or slots
        if not slots:
            return
        last = self._turn if after is None else after
        slot = next((each for each in slots if each > last), slots[0])
        if after is not None and slot == after:
            return  # the only child is the one asking
        self._turn = slot
        self._children[slot].write(f"{payload}\n".encode())

    def wake_all(self, payload: str) -> None:
        for writer in list(self._children.values()):
            if not writer.is_closing():
                writer.write(f"{payload}\n".encode())


def _log_failure(served: Any) -> None:
    """A child's socket served no more: only an unexpected error is worth a line."""
    if not served.cancelled() and served.exception() is not None:
        log.error("serving a worker process's wake-ups failed: %r", served.exception())
