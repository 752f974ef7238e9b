"""The job list's filters, as they live in the URL: ``/jobs?state=failed&queue=mail&task=app.send&error=timeout``.

Parsed and checked before any I/O; a bad value is a 400 naming it, never a
query. Everything is a bound parameter in the end (see ``dash_jobs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from ..job import STATES
from ..names import MAX_NAME_LENGTH

MAX_ERROR_TEXT = 200


class BadFilter(ValueError):
    """A filter value the dashboard refuses (the page says which and why)."""


@dataclass(frozen=True)
class JobFilter:
    state: str | None = None
    queue: str | None = None
    task: str | None = None
    error: str | None = None  # text anywhere in the last error, case-insensitive
    before: int | None = None  # keyset cursor: only jobs with a smaller id

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> JobFilter:
        state = _text(query, "state", 20)
        if state is not None and state not in STATES:
            raise BadFilter(f"state must be one of {', '.join(STATES)}, not {state!r}")
        return cls(
            state=state,
            queue=_text(query, "queue", MAX_NAME_LENGTH),
            task=_text(query, "task", MAX_NAME_LENGTH),
            error=_text(query, "error", MAX_ERROR_TEXT),
            before=_id(query, "before"),
        )

    def pattern(self) -> str | None:
        """The ILIKE pattern of ``error``: its text anywhere, with % and _ taken literally."""
        if self.error is None:
            return None
        escaped = self.error.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"%{escaped}%"

    def params(self, **changes: Any) -> dict[str, str]:
        """The filter as query parameters (empty ones left out), with ``changes`` applied."""
        changed = replace(self, **changes) if changes else self
        values = {
            "state": changed.state,
            "queue": changed.queue,
            "task": changed.task,
            "error": changed.error,
            "before": changed.before,
        }
        return {key: str(value) for key, value in values.items() if value is not None}

    def query(self, **changes: Any) -> str:
        params = self.params(**changes)
        return "?" + urlencode(params) if params else ""

    @property
    def first_page(self) -> bool:
        return self.before is None


def _text(query: Mapping[str, str], name: str, limit: int) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise BadFilter(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise BadFilter(f"{name} contains a NUL character")
    return value


def _id(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value.strip() == "":
        return None
    value = value.strip().lstrip("#")
    if not value.isdigit() or not 1 <= int(value) < 1 << 63:
        raise BadFilter(f"{name} must be a job id (a whole number from 1), not {value[:30]!r}")
    return int(value)


def job_id(query: Mapping[str, str]) -> int | None:
    """The ``id`` filter: a job id to open directly, or None."""
    return _id(query, "id")
