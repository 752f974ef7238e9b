"""The verification side effect every system's no-op job performs: record its id.

Every system, Currant included, runs the *same* handler body: ``record(i, t)``.
It is deliberately cheap and identical everywhere, so it costs each system the
same per job and cannot tilt the comparison:

* the id (and, for latency workloads, the pickup latency) is appended to a
  process-local buffer (a lock and a list append, well under a microsecond;
  no system call per job);
* a daemon thread, started lazily in each process (so it also exists in the
  children of forking pools: Celery prefork, RQ, Dramatiq), sends the buffer
  to Redis with one ``RPUSH`` per batch, at most every ``FLUSH_INTERVAL``;
* ``flush()`` also runs at interpreter exit, and synchronously for systems
  that kill their job process right after the job (RQ's fork-per-job).

A Redis *list*, not a set or a counter, so duplicates survive and can be
counted: the harness reads the list back and checks each id ran exactly once.

This module is stdlib only (a tiny RESP client over a socket) because it is
imported by Currant's dev venv and by the peers' venv alike, and neither
should get a dependency for the sake of the benchmark.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
from urllib.parse import urlparse

FLUSH_INTERVAL = 0.05  # seconds; the drain detector polls the list, so this bounds its lag
LEDGER_KEY = "peers:ledger"


class Resp:
    """Just enough of the Redis protocol for RPUSH/LLEN/LRANGE/DEL/SELECT/PING."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        db = (parsed.path or "/0").lstrip("/") or "0"
        self.call("SELECT", db)

    def call(self, *args: str | bytes | float) -> object:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> object:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class _Recorder:
    def __init__(self) -> None:
        self.pid = -1
        self.lock = threading.Lock()  # guards buffer and pid
        self.send_lock = threading.Lock()  # guards conn
        self.buffer: list[str] = []
        self.wake = threading.Event()
        self.conn: Resp | None = None

    def _start(self) -> None:
        # Called under the lock in a process that has no flusher yet (first use,
        # or a forked child, which inherits the parent's memory but no threads).
        self.pid = os.getpid()
        self.buffer = []
        self.conn = None
        self.wake = threading.Event()
        threading.Thread(target=self._loop, name="ledger-flush", daemon=True).start()

    def record(self, entry: str) -> None:
        # Per job: a lock and a list append. The pid is not re-read here (a
        # syscall per job): a fork resets it instead (see _forget_after_fork),
        # and the flusher is woken only when it sleeps.
        with self.lock:
            if self.pid < 0:
                self._start()
            self.buffer.append(entry)
        if not self.wake.is_set():
            self.wake.set()

    def _forget_after_fork(self) -> None:
        # The child inherits the buffer and the socket but not the thread.
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.pid = -1

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(FLUSH_INTERVAL)  # let a batch gather: one RPUSH per interval, not per job
            self.wake.clear()
            self.flush()

    def flush(self) -> None:
        # The buffer is swapped under the record lock, but sent outside it: at
        # 100,000 jobs/s a batch takes milliseconds to encode and send, and the
        # handlers must not wait for that.
        with self.lock:
            if self.pid != os.getpid():
                return
            batch, self.buffer = self.buffer, []
        if not batch:
            return
        # Flushes from the thread and from atexit must not interleave on one socket.
        with self.send_lock:
            if self.conn is None:
                self.conn = Resp(os.environ["PEERS_REDIS_URL"])
            self.conn.call("RPUSH", LEDGER_KEY, *batch)


_recorder = _Recorder()
os.register_at_fork(after_in_child=_recorder._forget_after_fork)
atexit.register(_recorder.flush)


def record(i: int, t: float) -> None:
    """The whole body of every benchmark job: note that job ``i`` ran.

    ``t`` is the producer's ``time.time()`` at enqueue (0 in the drain
    workload); when set, the pickup latency (handler start minus enqueue, same
    machine clock) is recorded with the id.
    """
    if t:
        _recorder.record(f"{i}:{(time.time() - t) * 1000.0:.3f}")
    else:
        _recorder.record(str(i))


def flush() -> None:
    """Send what this process buffered now (for processes that end with ``os._exit``)."""
    _recorder.flush()
