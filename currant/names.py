"""Names Currant stores: tasks, queues, periodic schedules.

Names are always bound parameters, never spliced into SQL, so the rules are
about what PostgreSQL text can hold and what stays readable: non-empty, no
NUL, at most 200 characters (the database checks the same).
"""

from __future__ import annotations

from typing import Any

MAX_NAME_LENGTH = 200


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{kind} name must be 1-{MAX_NAME_LENGTH} characters, got {len(name)}")
    if "\x00" in name:
        raise ValueError(f"{kind} name {name!r} contains a NUL character")
    return name


def check_job_id(job_id: Any) -> int:
    """A job id as callers pass it: an int (a bool is not one), checked before any I/O."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise TypeError(f"a job id is an int, not {type(job_id).__name__} ({job_id!r})")
    if not 1 <= job_id < 1 << 63:
        raise ValueError(f"job id {job_id} is out of range (1 to 2**63-1)")
    return job_id
