"""A real PgBouncer (Debian's ``pgbouncer`` package) in front of the test database.

Each test that needs one starts its own process: its own ini and userlist in
the test's tmp directory, its own port, ``pool_mode = transaction`` unless
told otherwise, ``auth_type = trust`` (the test server trusts loopback too).
Tests skip, saying why, only when the binary is absent; ``.ci/run`` installs
it. PgBouncer refuses to run as root, so under root it is told to switch to
an unprivileged user (``-u``: the owner of the server's Unix socket directory
when the server is reached through one, as the embedded server is) and its
directory is made writable for that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .conftest import wait_for

BINARY = shutil.which("pgbouncer") or next(
    (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(path)), None
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_user(socket_dir: str | None = None) -> str | None:
    if socket_dir:
        # A Unix socket in a server's own data directory (the embedded server
        # runs as its own user, with a 0700 PGDATA): only its owner reaches it.
        owner = os.stat(socket_dir).st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


class PgBouncer:
    """One PgBouncer process; ``restart()`` kills it (fast exit: every client
    and server connection cut) and starts it again on the same port."""

    def __init__(self, database_dsn: str, pool_mode: str = "transaction", pool_size: int = 10) -> None:
        if BINARY is None:
            pytest.skip("PgBouncer is not installed (apt-get install pgbouncer; .ci/run does)")
        self.upstream = conninfo_to_dict(database_dsn)
        # Not under pytest's tmp_path: under root that is private to root, and
        # PgBouncer runs as another user.
        directory = self.directory = Path(tempfile.mkdtemp(prefix="currant-pgbouncer-"))
        self.port = _free_port()
        user = str(self.upstream.get("user") or "postgres")
        (directory / "userlist.txt").write_text(f'"{user}" ""\n')
        host = self.upstream.get("host") or "127.0.0.1"
        (directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={self.upstream.get('port') or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {directory / 'userlist.txt'}\n"
            f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
            f"logfile = {directory / 'pgbouncer.log'}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.close()  # a PgBouncer that never answered is not left running
            raise

    def dsn(self) -> str:
        return make_conninfo(**{**self.upstream, "host": "127.0.0.1", "port": str(self.port)})

    def start(self) -> None:
        command = [str(BINARY)]
        if os.geteuid() == 0:
            host = str(self.upstream.get("host") or "")
            user = _unprivileged_user(host if host.startswith("/") else None)
            if user is None:
                pytest.skip("PgBouncer refuses to run as root and no unprivileged user exists")
            os.chmod(self.directory, 0o777)
            command += ["-u", user]
        self.process = subprocess.Popen(
            [*command, str(self.directory / "pgbouncer.ini")], stderr=open(self.directory / "stderr", "wb")
        )
        wait_for(self._answers, timeout=15, interval=0.05, message="PgBouncer accepting connections")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            stderr = (self.directory / "stderr").read_text(errors="replace")
            raise AssertionError(f"PgBouncer exited with {self.process.returncode}:\n{stderr}{self.log()[-2000:]}")
        try:
            with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # PgBouncer's fast exit
            process.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""
