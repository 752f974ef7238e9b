"""One dashboard: the App it reads, its statements, its cache, its live hub, and page rendering.

Pages (:mod:`.pages`) and actions (:mod:`.actions`) get it from
``request.app.state.dashboard``. Every read is a plan run by ``App.arun_plan``
on the App's async pool.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..app import App
from . import reads
from .cache import TTLCache
from .format import FILTERS
from .live import Hub
from .security import CSRF_FIELD, Csrf

# The overview's expensive part (state counts) is read at most this often per process.
COUNTS_TTL = 3.0
ACTIVITY_TTL = 2.0
HEALTH_TTL = 2.0
# Per-queue "in/s" compares waiting counts this far apart (at least).
RATE_SPAN = 10.0
# The total in/s is measured over (up to) this long.
SEQUENCE_WINDOW = 300.0
NAV = (("/", "Overview"), ("/jobs", "Jobs"), ("/workers", "Workers"), ("/periodic", "Periodic"), ("/health", "Health"))


class Dashboard:
    def __init__(self, app: App, *, read_only: bool = False, csrf: Csrf | None = None, hub: Hub | None = None) -> None:
        self.app = app
        self.read_only = read_only
        self.sql = app.sql
        self.dsql = app.sql  # the dashboard.sql statements are loaded with the rest
        self.cache = TTLCache()
        self.hub = hub or Hub(app, self.dsql)
        self.csrf = csrf or Csrf()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("currant.dashboard", "templates"),
            autoescape=True,  # every value from the database is text, whatever it contains
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(FILTERS)
        self._history: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)
        self._sequence: deque[tuple[float, int]] = deque(maxlen=256)

    async def run(self, plan: Any, *, write: bool = False) -> Any:
        return await self.app.arun_plan(plan, write=write)

    # -- the overview's data -----------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        counts, activity, workers = await asyncio.gather(
            self.cache.get("counts", COUNTS_TTL, self._counts),
            self.cache.get("activity", ACTIVITY_TTL, self._activity),
            self.cache.get("workers", ACTIVITY_TTL, lambda: self.run(reads.workers_view(self.sql, self.dsql))),
        )
        names = sorted(
            set(counts["queues"]) | set(activity["queues"]) | {q for w in workers["live"] for q in w["queues"]}
        )
        growth = self._backlog_growth()
        rows = []
        for name in names:
            waiting = counts["queues"].get(name) or reads.empty_queue_entry()
            done = activity["queues"].get(name, {"hour": {}, "out_rate": 0.0})
            out_rate = done["out_rate"]
            rows.append(
                {
                    "name": name,
                    "states": waiting["states"],
                    "capped": waiting["capped"],
                    "oldest_age": waiting["oldest_age"],
                    "hour": done["hour"],
                    "out_rate": out_rate,
                    "in_rate": None if growth is None else max(0.0, out_rate + growth.get(name, 0.0)),
                    "workers": sum(1 for w in workers["live"] if name in w["queues"]),
                }
            )
        return {
            "queues": rows,
            "finished": counts["finished"],
            "cap": counts["cap"],
            "counts_age": self.cache.age("counts") or 0.0,
            "activity": activity,
            "running": sum(int(w["running"] or 0) for w in workers["live"]),
            "workers": len(workers["live"]),
            "deaths": len(workers["dead"]),
            "deaths_capped": len(workers["dead"]) >= reads.RECENT_DEATHS,
        }

    async def _counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = await self.run(reads.overview_counts(self.dsql))
        waiting = {q: sum(e["states"].values()) for q, e in counts["queues"].items()}
        self._history.append((time.monotonic(), waiting))
        return counts

    async def _activity(self) -> dict[str, Any]:
        activity: dict[str, Any] = await self.run(reads.overview_activity(self.dsql))
        if activity["sequence"] is not None:
            self._sequence.append((time.monotonic(), int(activity["sequence"])))
            measured = self._sequence_rate()
            if measured is not None:
                activity["in_rate"] = measured
        return activity

    def _sequence_rate(self) -> float | None:
        """Jobs/s enqueued, from this process's own samples of the id sequence
        (exact, and there from the first seconds, where the per-minute marks
        need a minute); None until two samples are RATE_SPAN apart."""
        newest_at, newest = self._sequence[-1]
        for at, value in self._sequence:
            if newest_at - at <= SEQUENCE_WINDOW and newest_at - at >= RATE_SPAN:
                return max(0, newest - value) / (newest_at - at)
        return None

    def _backlog_growth(self) -> dict[str, float] | None:
        """Jobs/s by which each queue's waiting jobs grew, between the newest
        count and the newest one at least RATE_SPAN older; None until there is one."""
        if len(self._history) < 2:
            return None
        newest_at, newest = self._history[-1]
        for at, old in reversed(self._history):
            if newest_at - at >= RATE_SPAN:
                span = newest_at - at
                return {q: (newest.get(q, 0) - old.get(q, 0)) / span for q in set(newest) | set(old)}
        return None

    # -- rendering ---------------------------------------------------------------

    def url(self, request: Request, path: str, params: Mapping[str, Any] | None = None) -> str:
        root = str(request.scope.get("root_path") or "").rstrip("/")
        query = "?" + urlencode({k: v for k, v in params.items() if v not in (None, "")}) if params else ""
        return f"{root}{path}{query}"

    def relative_path(self, request: Request) -> str:
        root = str(request.scope.get("root_path") or "").rstrip("/")
        path = request.url.path
        return (path[len(root) :] if root and path.startswith(root) else path) or "/"

    def render(self, request: Request, template: str, context: Mapping[str, Any], status: int = 200) -> Response:
        session_id = self.csrf.session_id(request)
        new_session = session_id is None
        if session_id is None:
            session_id = self.csrf.new_session()
        html = self.templates.get_template(template).render(
            request=request,
            read_only=self.read_only,
            csrf_field=CSRF_FIELD,
            csrf=self.csrf.token(session_id),
            url=lambda path, params=None: self.url(request, path, params),
            nav=NAV,
            schema=self.app.schema,
            now=datetime.now(timezone.utc),
            here=self.relative_path(request),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if new_session:
            self.csrf.set_cookie(response, request, session_id)
        return response

    def problem(self, request: Request, status: int, message: str) -> Response:
        return self.render(
            request,
            "problem.html",
            {"title": "Not done", "message": message, "status": status, "live": False},
            status=status,
        )
