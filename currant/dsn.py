"""Connection strings: checked before use, shown without secrets, and what a
connection failure means (a mistake to report, or trouble to wait out)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .errors import ConfigurationError

# Words of PostgreSQL's and libpq's messages for failures that waiting will
# not cure: the server answered, and said no.
_PERMANENT = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "does not exist",  # role or database
    "no pg_hba.conf entry",
    "invalid dsn",
    "invalid connection option",
    "invalid integer value",
    "invalid sslmode value",
    "could not translate host name",  # a typo in the host name
    "unsupported startup parameter",
    "permission denied for database",
)


def check(dsn: Any) -> str:
    """A DSN that libpq can parse, or ConfigurationError saying what is wrong (before any I/O)."""
    if not isinstance(dsn, str):
        raise ConfigurationError(f"a DSN is a str, not {type(dsn).__name__}")
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"malformed DSN: {_first_line(exc)}") from None
    return dsn


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` as libpq would connect, never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(malformed DSN)"
    host = str(params.get("host") or "localhost")
    if host.startswith("/"):
        host = f"[socket {host}]"
    port = str(params.get("port") or "5432")
    user = str(params.get("user") or "")
    dbname = str(params.get("dbname") or user or "(default)")
    return f"{user + '@' if user else ''}{host}:{port}/{dbname}"


def is_permanent(exc: BaseException) -> bool:
    """True for a connection failure that retrying cannot fix (bad credentials,
    no such database or role, a malformed DSN)."""
    if isinstance(exc, psycopg.ProgrammingError):
        return True
    text = str(exc).lower()
    return any(words in text for words in _PERMANENT)


def reason(exc: BaseException) -> str:
    """The useful line of a libpq error (it repeats itself per address tried)."""
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # libpq tries each address in turn: the server's FATAL is the telling line.
    for line in lines:
        if "FATAL" in line:
            return line.split("FATAL:", 1)[1].strip()
    return lines[0].removeprefix("connection failed: ") if lines else type(exc).__name__
