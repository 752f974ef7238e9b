"""The actions (POST): retry or cancel one job, retry or cancel many by filter.

Each is refused in read-only mode, and without a valid CSRF token (see
:mod:`.security`), before anything is read. A job's own retry and cancel are
:mod:`currant.control`'s, so the dashboard does exactly what
``app.retry``/``app.cancel`` and the admin CLI do. After the action the
browser is redirected (303) to a page that says what happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .. import control
from ..names import check_job_id
from . import reads
from .filters import BadFilter, JobFilter
from .security import CSRF_FIELD
from .service import Dashboard

MAX_FORM = 16_384
Handler = Callable[[Request, Dashboard, dict[str, str]], Awaitable[Response]]


def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Read-only mode and the CSRF token, checked before the handler runs."""

    async def endpoint(request: Request) -> Response:
        dashboard: Dashboard = request.app.state.dashboard
        if dashboard.read_only:
            return dashboard.problem(request, 403, "this dashboard is read-only: it takes no actions")
        fields = await _form(request)
        if fields is None:
            return dashboard.problem(request, 413, "the form is too large")
        refusal = dashboard.csrf.refusal(request, fields.get(CSRF_FIELD))
        if refusal is not None:
            return dashboard.problem(request, 403, f"refused: {refusal}")
        try:
            return await handler(request, dashboard, fields)
        except ValueError as exc:  # a job id out of range (the route only knows it is digits)
            return dashboard.problem(request, 404, str(exc))

    return endpoint


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded fields of a POST (every form here is a few short fields); None past MAX_FORM bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def _job_id(request: Request) -> int:
    return check_job_id(int(request.path_params["job_id"]))


async def _retry(request: Request, dashboard: Dashboard, fields: dict[str, str]) -> Response:
    job_id = _job_id(request)
    retried = await dashboard.run(control.retry(dashboard.sql, dashboard.app.channel, job_id), write=True)
    dashboard.cache.clear()
    outcome = "retried" if retried else "not_retried"
    return RedirectResponse(dashboard.url(request, f"/jobs/{job_id}", {"outcome": outcome}), status_code=303)


async def _cancel(request: Request, dashboard: Dashboard, fields: dict[str, str]) -> Response:
    job_id = _job_id(request)
    outcome = await dashboard.run(control.cancel(dashboard.sql, dashboard.app.channel, job_id), write=True)
    dashboard.cache.clear()
    if outcome == "not_found":
        return dashboard.problem(request, 404, f"job {job_id} does not exist")
    if outcome.startswith("already_"):
        outcome = "already_finished"
    return RedirectResponse(dashboard.url(request, f"/jobs/{job_id}", {"outcome": outcome}), status_code=303)


async def _bulk(request: Request, dashboard: Dashboard, fields: dict[str, str]) -> Response:
    action = fields.get("action", "")
    try:
        where = JobFilter.from_query(fields)
        reads.bulk_states(action, where)
    except (BadFilter, ValueError) as exc:
        return dashboard.problem(request, 400, str(exc))
    changed = await dashboard.run(reads.bulk_apply(dashboard.dsql, dashboard.app.channel, action, where), write=True)
    dashboard.cache.clear()
    # Afterwards: the jobs the action moved, in their new state.
    state = "queued" if action == "retry" else "cancelled"
    params = {
        **where.params(state=state, before=None),
        "done": "retried" if action == "retry" else "cancelled",
        "n": str(changed),
    }
    return RedirectResponse(dashboard.url(request, "/jobs", params), status_code=303)


retry = guarded(_retry)
cancel = guarded(_cancel)
bulk = guarded(_bulk)
