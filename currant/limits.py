"""A task's rate and concurrency limits, as ``@app.task`` declares them.

The database enforces them, for every worker at once (``claim_limited`` in
migration 0007_limits). Here: the declaration is parsed and checked, a
starting worker gets what it writes into the ``limits`` table, and a job's
key is worked out from its arguments.

Rates are token buckets: ``"100/s"`` adds a token every 10 ms, and a bucket
holds a tenth of a second's worth (at least one), so a worker may start that
many at once after a quiet spell and no window of any length sees more than
the rate plus that burst.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A bucket holds this many seconds' worth of tokens (and at least one).
BURST_SECONDS = 0.1
MAX_KEY_LENGTH = 200

_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")

KeyFunction = Callable[..., Any]


def parse_rate(text: Any) -> float:
    """``"100/s"``, ``"10/m"``, ``"1000/h"`` -> jobs per second."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or match.group(2) not in _PERIODS:
        raise ValueError(f"rate_limit must look like '100/s', '10/m' or '1000/h', got {text!r}")
    per_second = float(match.group(1)) / _PERIODS[match.group(2)]
    if per_second * 3600 < 1:
        raise ValueError(f"rate_limit {text!r} is below one job an hour")
    return per_second


def check_key(value: Any, where: str = "limit_key") -> str:
    """A job's key: a str (or an int, as its decimal text) of at most 200 characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{where} must be a str or an int, got {type(value).__name__}")
    key = str(value)
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"{where} is longer than {MAX_KEY_LENGTH} characters")
    return key


@dataclass(frozen=True)
class Limit:
    """What one task declared. ``key`` is None (one limit for all its jobs), the
    name of one of its arguments, or a function of the job's arguments."""

    task: str
    per_second: float | None
    max_running: int | None
    key: str | KeyFunction | None
    signature: inspect.Signature | None

    @property
    def burst(self) -> float | None:
        return None if self.per_second is None else max(1.0, self.per_second * BURST_SECONDS)

    def key_for(self, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> str:
        """The key of a job with these arguments ('' for a task-wide limit)."""
        if self.key is None:
            return ""
        where = f"task {self.task!r}: limit_key"
        if callable(self.key):
            return check_key(self.key(*args, **(kwargs or {})), where)
        try:
            bound = self.signature.bind(*args, **(kwargs or {})) if self.signature else None
        except TypeError as exc:
            raise TypeError(f"{where} {self.key!r}: the arguments do not fit the task ({exc})") from None
        if bound is None:
            raise TypeError(f"{where} {self.key!r}: the task's signature is unknown")
        bound.apply_defaults()
        if self.key not in bound.arguments:
            raise TypeError(f"{where} {self.key!r} is not among the job's arguments")
        return check_key(bound.arguments[self.key], where)


def make_limit(
    task: str, signature: inspect.Signature | None, rate_limit: Any, max_running: Any, limit_key: Any
) -> Limit | None:
    """The task's Limit, or None; every mistake is refused here, at definition."""
    if rate_limit is None and max_running is None:
        if limit_key is not None:
            raise ValueError(f"task {task!r}: limit_key needs a rate_limit or a max_running")
        return None
    per_second = None if rate_limit is None else parse_rate(rate_limit)
    if max_running is not None and (isinstance(max_running, bool) or not isinstance(max_running, int)):
        raise TypeError(f"max_running must be an int, got {type(max_running).__name__}")
    if max_running is not None and max_running < 1:
        raise ValueError(f"max_running must be at least 1, got {max_running}")
    if isinstance(limit_key, str):
        if signature is not None and limit_key not in signature.parameters:
            raise ValueError(f"task {task!r}: limit_key {limit_key!r} is not one of its arguments")
    elif limit_key is not None and not callable(limit_key):
        raise TypeError(f"limit_key must be an argument's name or a function, got {type(limit_key).__name__}")
    return Limit(task, per_second, max_running, limit_key, signature)


def declaration(tasks: Iterable[tuple[str, Limit | None]]) -> dict[str, list[Any]]:
    """The ``declare_limits`` parameters for a worker's tasks."""
    tasks = list(tasks)
    limited = [(name, limit) for name, limit in sorted(tasks, key=lambda pair: pair[0]) if limit is not None]
    unlimited = sorted(name for name, limit in tasks if limit is None)
    return {
        "tasks": [name for name, _ in limited],
        "per_second": [limit.per_second for _, limit in limited],
        "burst": [limit.burst for _, limit in limited],
        "max_running": [limit.max_running for _, limit in limited],
        "unlimited": unlimited,
    }
