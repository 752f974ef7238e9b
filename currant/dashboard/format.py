"""How values read on the pages: times, ages, rates, decoded arguments.

Jinja2 filters; pure functions. Escaping is Jinja2's (autoescape), never here.
"""

from __future__ import annotations

import json
import pprint
from datetime import datetime, timezone
from typing import Any


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float | None) -> str:
    """A duration as people say it: 42 s, 5 min, 3.2 h, 2.0 days."""
    if seconds is None:
        return "–"
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def since(then: datetime | None, now: datetime | None) -> str:
    if then is None or now is None:
        return ""
    return age((now - then).total_seconds())


def rate(per_second: float | None) -> str:
    if per_second is None:
        return "–"
    return f"{per_second:,.1f}" if per_second < 10 else f"{per_second:,.0f}"


def count(n: int | None, capped: bool = False) -> str:
    if n is None:
        return "–"
    return f"{n:,}+" if capped else f"{n:,}"


def readable(value: Any) -> str:
    """A decoded msgpack value as indented JSON; bytes shown as hex. A map
    JSON cannot hold (keys that are lists, say) is shown as Python would."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=_default)
    except (TypeError, ValueError):
        return pprint.pformat(value, width=100)


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes (hex)": bytes(value).hex()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


FILTERS = {"when": when, "age": age, "since": since, "rate": rate, "count": count, "readable": readable}
