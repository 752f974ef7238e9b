"""A small threaded TCP proxy on 127.0.0.1 for network faults between a client and PostgreSQL.

* ``cut_after(pattern)``: the next client->server chunk containing ``pattern``
  is forwarded to the server, then the client side is closed at once and the
  server's answer is swallowed (the server still gets and runs the request:
  "the connection died while the COMMIT was in flight");
* ``blackhole()``: every existing connection stops forwarding in both
  directions but stays open (a half-open TCP peer: no FIN, no RST). New
  connections are forwarded normally unless ``refuse_new`` is set;
* ``cut_all()``: close every connection.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.blackholed = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            try:
                sock.close()
            except OSError:
                pass


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = int(self.listener.getsockname()[1])
        self.pairs: list[_Pair] = []
        self.lock = threading.Lock()
        self.refuse_new = False
        self._cut_pattern: bytes | None = None
        self.cut_event = threading.Event()
        self.accepted = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._thread.start()

    # -- controls ------------------------------------------------------------------

    def cut_after(self, pattern: bytes) -> None:
        self.cut_event.clear()
        self._cut_pattern = pattern

    def blackhole(self) -> None:
        with self.lock:
            for pair in self.pairs:
                pair.blackholed = True

    def cut_all(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            pair.close()

    def close(self) -> None:
        self._stopped = True
        try:
            self.listener.close()
        except OSError:
            pass
        self.cut_all()

    def dsn_params(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port}

    # -- forwarding ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse_new:
                client.close()
                continue
            try:
                server = self._connect_upstream()
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, server)
            with self.lock:
                self.pairs.append(pair)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(pair,), name="proxy-pair", daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        """TCP, or PostgreSQL's Unix socket when the upstream host is a directory
        (as the embedded server's DSN names it): clients still reach the proxy by TCP."""
        host, port = self.upstream
        if host.startswith("/"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.settimeout(5)
            server.connect(f"{host}/.s.PGSQL.{port}")
            return server
        return socket.create_connection(self.upstream, timeout=5)

    def _pump(self, pair: _Pair) -> None:
        swallow_server = False
        try:
            while not pair.closed:
                watched = [pair.server] if swallow_server else [pair.client, pair.server]
                readable, _, _ = select.select(watched, [], [], 0.05)
                if pair.blackholed:
                    # Half-open: keep both sockets open, read nothing, send nothing.
                    time.sleep(0.05)  # idling in the blackhole, not synchronisation
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        pair.close()
                        return
                    if sock is pair.client:
                        pair.server.sendall(data)
                        pattern = self._cut_pattern
                        if pattern is not None and pattern in data:
                            self._cut_pattern = None
                            # The request reached the server; the client never hears back.
                            self.cut_event.set()
                            swallow_server = True
                            pair.client.close()
                            threading.Timer(2.0, pair.close).start()
                            break
                    elif not swallow_server:
                        pair.client.sendall(data)
        except (OSError, ValueError):
            pair.close()
