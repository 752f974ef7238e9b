"""``--processes N``: one command, N worker processes, one supervisor.

Python runs one thread of Python at a time, so a worker process keeps about
one core busy; N processes use N cores. The supervisor starts N copies of the
same worker command, forwards SIGTERM/SIGINT to them (a second signal is
forwarded too, so it still means "exit at once"), and restarts any child that
dies while it is not stopping, with the one backoff policy per slot (reset
once a child has run for a while). With ``--burst`` it exits when every child
has exited 0.

With LISTEN available, the supervisor holds the host's one LISTEN
connection and wakes one child at a time (:mod:`currant.fleet`): each child
then holds two connections (claims; completions and heartbeat).

Children get the DSN through their environment, never their command line
(which ``ps`` shows to every user of the host), and are marked as children so
that no argument spelling can make one a supervisor in turn.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from .backoff import Backoff

if TYPE_CHECKING:
    from .fleet import ListenSpec

log = logging.getLogger("currant.supervisor")

# Set in every child's environment ("2 of 4"): a child never supervises.
CHILD_MARKER = "CURRANT_SUPERVISED_CHILD"
# A child that keeps dying right after start is restarted no faster than this.
RESTART_FIRST, RESTART_CAP = 0.5, 10.0
# A child that ran this long before dying starts the backoff afresh.
HEALTHY_AFTER = 30.0
# Connection strings go to the children through these variables.
_DSN_ENV = {"dsn": "CURRANT_DSN", "listen_dsn": "CURRANT_LISTEN_DSN"}
# Options whose value the children get another way (or not at all).
_STRIPPED = {
    "--processes": "processes",
    "--dsn": "dsn",
    "--listen-dsn": "listen_dsn",
    "--metrics-port": "metrics",
    "--metrics-host": "metrics",
}


def child_command(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The worker command for one child (no --processes, no --dsn) and the
    connection strings given on the command line, as environment variables."""
    out: list[str] = []
    env: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in _STRIPPED:
            given = value if eq else next(args, None)
            if _STRIPPED[name] in _DSN_ENV and given:
                env[_DSN_ENV[_STRIPPED[name]]] = given
            continue
        out.append(arg)
    return [sys.executable, "-m", "currant.worker", *out], env


def supervise(
    argv: Sequence[str],
    processes: int,
    burst: bool,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",
    listen: ListenSpec | None = None,
) -> int:
    command, dsns = child_command(argv)
    env = {**os.environ, **dsns}
    port_dir = None
    if metrics_port is not None:
        from .worker.metrics_supervisor import PORT_FILE_ENV, serve_children

        port_dir = serve_children(metrics_port, metrics_host)
        command += ["--metrics-port", "0", "--metrics-host", "127.0.0.1"]  # each child on a free loopback port
    children: dict[int, subprocess.Popen[bytes]] = {}
    started_at: dict[int, float] = {}
    backoff = {slot: Backoff(RESTART_FIRST, RESTART_CAP) for slot in range(processes)}
    restart_at: dict[int, float] = {}
    stopping = False

    # The host's one LISTEN: children get their wake-ups from here and hold
    # only their claim and completion connections.
    host = None
    if listen is not None:
        from .fleet import HostListener
        from .worker.wakeup import SUPERVISOR_PID_ENV, WAKEUP_FD_ENV

        host = HostListener(listen)
        host.start()

    def start(slot: int) -> None:
        child_env = {**env, CHILD_MARKER: f"{slot + 1} of {processes}"}
        if port_dir is not None:
            child_env[PORT_FILE_ENV] = str(port_dir / f"{slot}.port")
        if host is None:
            children[slot] = subprocess.Popen(command, env=child_env)
        else:
            theirs = host.attach(slot)
            child_env[WAKEUP_FD_ENV] = str(theirs.fileno())
            child_env[SUPERVISOR_PID_ENV] = str(os.getpid())
            try:
                children[slot] = subprocess.Popen(command, env=child_env, pass_fds=(theirs.fileno(),))
            finally:
                theirs.close()
        started_at[slot] = time.monotonic()
        log.info("started worker process %d (pid %d)", slot, children[slot].pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        restart_at.clear()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(processes):
        start(slot)
    finished: set[int] = set()
    failures = 0
    while len(finished) < processes:
        time.sleep(0.1)
        now = time.monotonic()
        for slot, child in list(children.items()):
            if slot in finished:
                continue
            if slot in restart_at:
                if stopping:
                    restart_at.pop(slot)
                    finished.add(slot)
                elif now >= restart_at[slot]:
                    del restart_at[slot]
                    start(slot)
                continue
            code = child.poll()
            if code is None:
                continue
            if stopping or (burst and code == 0):
                # A child stopped by our forwarded signal may report it as its
                # exit status; only a burst child that failed counts as failure.
                finished.add(slot)
                failures += code != 0 and not stopping
                continue
            if now - started_at[slot] >= HEALTHY_AFTER:
                backoff[slot].reset()
            delay = backoff[slot].next_delay()
            log.warning("worker process %d (pid %d) exited with %s; restarting in %.1f s", slot, child.pid, code, delay)
            restart_at[slot] = now + delay
    return 1 if failures else 0
