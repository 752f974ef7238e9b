"""``--processes N``: one command, N worker processes, one supervisor.

Python runs one thread of Python at a time, so a worker process keeps about
one core busy; N processes use N cores. The supervisor starts N copies of the
same worker command, forwards SIGTERM/SIGINT to them (a second signal is
forwarded too, so it still means "exit at once"), and restarts any child that
dies while it is not stopping. With ``--burst`` it exits when every child has
exited 0.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("currant.supervisor")

# A child that keeps dying right after start is restarted no faster than this.
RESTART_BACKOFF = (0.5, 10.0)


def child_argv(argv: Sequence[str]) -> list[str]:
    """The worker command for one child: the same arguments without --processes."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return [sys.executable, "-m", "currant.worker", *out]


def supervise(argv: Sequence[str], processes: int, burst: bool) -> int:
    command = child_argv(argv)
    children: dict[int, subprocess.Popen[bytes]] = {}
    backoff: dict[int, float] = {}
    stopping = False

    def start(slot: int) -> None:
        children[slot] = subprocess.Popen(command)
        log.info("started worker process %d (pid %d)", slot, children[slot].pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
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
        for slot, child in list(children.items()):
            if slot in finished:
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
            delay = backoff.get(slot, RESTART_BACKOFF[0])
            log.warning("worker process %d (pid %d) exited with %s; restarting in %.1f s", slot, child.pid, code, delay)
            time.sleep(delay)
            backoff[slot] = min(delay * 2, RESTART_BACKOFF[1])
            if stopping:  # a signal came during the pause: nothing to restart
                finished.add(slot)
                continue
            start(slot)
    return 1 if failures else 0
