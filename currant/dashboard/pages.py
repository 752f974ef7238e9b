"""The pages (GET): overview, jobs, job, workers, periodic, health, the bulk
confirmation, the event stream, and the queue metrics for Prometheus.

Each handler reads through its Dashboard (``request.app.state.dashboard``)
and renders a template; none writes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from .. import metrics as queue_metrics
from ..job import STATES
from ..names import check_job_id
from . import chart, health, reads
from .filters import BadFilter, JobFilter, job_id
from .service import HEALTH_TTL, Dashboard


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


async def overview(request: Request) -> Response:
    dashboard = _dashboard(request)
    data = await dashboard.overview()
    return dashboard.render(
        request,
        "overview.html",
        {
            "title": "Overview",
            "live": True,
            **data,
            "chart": chart.throughput(data["activity"]["chart"]),
        },
    )


async def jobs(request: Request) -> Response:
    dashboard = _dashboard(request)
    try:
        wanted = job_id(request.query_params)
        where = JobFilter.from_query(request.query_params)
    except BadFilter as exc:
        return dashboard.problem(request, 400, str(exc))
    if wanted is not None:
        return RedirectResponse(dashboard.url(request, f"/jobs/{wanted}"), status_code=303)
    page = await dashboard.run(reads.job_page(dashboard.dsql, where))
    bulk = None
    if not dashboard.read_only:
        if where.state in ("failed", "cancelled"):
            bulk = "retry"
        elif where.state in reads.WAITING or (where.state is None and (where.queue or where.task or where.error)):
            bulk = "cancel"  # not offered on the bare list: "cancel everything waiting" takes a filter
    return dashboard.render(
        request,
        "jobs.html",
        {
            "title": "Jobs",
            "live": where.first_page,
            "where": where,
            "page": page,
            "bulk": bulk,
            "states": STATES,
            "done": _done_message(request),
            "bulk_url": dashboard.url(request, "/jobs/bulk", {**where.params(before=None), "action": bulk or ""}),
        },
    )


def _done_message(request: Request) -> str | None:
    """What the last action did, from the redirect's query (codes and numbers, never free text)."""
    action, n = request.query_params.get("done"), request.query_params.get("n", "")
    if action not in ("retried", "cancelled") or not n.isdigit():
        return None
    return f"{action} {int(n):,} job{'s' if int(n) != 1 else ''}"


async def job(request: Request) -> Response:
    dashboard = _dashboard(request)
    try:
        wanted = check_job_id(int(request.path_params["job_id"]))
    except (TypeError, ValueError):
        return dashboard.problem(request, 404, "no such job")
    view = await dashboard.run(reads.job_view(dashboard.sql, dashboard.dsql, wanted))
    if view["job"] is None:
        return dashboard.problem(request, 404, f"job {wanted} does not exist (or was pruned after its retention)")
    outcome = request.query_params.get("outcome")
    return dashboard.render(
        request,
        "job.html",
        {
            "title": f"Job {wanted}",
            "live": True,
            **view,
            "outcome": _OUTCOMES.get(outcome or ""),
        },
    )


_OUTCOMES = {
    "retried": "Queued again.",
    "not_retried": "Not retried: only failed or cancelled jobs are (or another live job holds its unique key).",
    "cancelled": "Cancelled.",
    "cancel_requested": "Cancel requested: its worker has been told to stop it.",
    "already_finished": "Nothing to cancel: it had already finished.",
}


async def workers(request: Request) -> Response:
    dashboard = _dashboard(request)
    view = await dashboard.run(reads.workers_view(dashboard.sql, dashboard.dsql))
    return dashboard.render(request, "workers.html", {"title": "Workers", "live": True, **view})


async def periodic(request: Request) -> Response:
    dashboard = _dashboard(request)
    view = await dashboard.run(reads.periodic_view(dashboard.dsql))
    return dashboard.render(request, "periodic.html", {"title": "Periodic", "live": True, **view})


async def health_page(request: Request) -> Response:
    dashboard = _dashboard(request)
    reading = await dashboard.cache.get("health", HEALTH_TTL, lambda: dashboard.run(reads.health_view(dashboard.dsql)))
    checks = health.checks(reading, datetime.now(timezone.utc))
    if request.query_params.get("format") == "json":
        return JSONResponse(
            {
                "ok": all(check.ok for check in checks),
                "checks": [{"name": c.name, "ok": c.ok, "value": c.value, "advice": c.advice} for c in checks],
            }
        )
    return dashboard.render(
        request,
        "health.html",
        {
            "title": "Health",
            "live": False,
            "checks": checks,
            "reading": reading,
            "ok": all(check.ok for check in checks),
        },
    )


async def bulk_confirm(request: Request) -> Response:
    dashboard = _dashboard(request)
    if dashboard.read_only:
        return dashboard.problem(request, 403, "this dashboard is read-only")
    action = request.query_params.get("action", "")
    try:
        where = JobFilter.from_query(request.query_params)
        count, capped = await dashboard.run(reads.bulk_count(dashboard.dsql, action, where))
        states = reads.bulk_states(action, where)
    except ValueError as exc:  # BadFilter, or an action the filter does not allow
        return dashboard.problem(request, 400, str(exc))
    return dashboard.render(
        request,
        "bulk.html",
        {
            "title": f"Bulk {action}",
            "live": False,
            "action": action,
            "where": replace(where, before=None),
            "count": count,
            "capped": capped,
            "states": states,
        },
    )


async def events(request: Request) -> Response:
    dashboard = _dashboard(request)
    return StreamingResponse(
        dashboard.hub.events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )


async def metrics(request: Request) -> Response:
    """The queue's health from the database, as ``python -m currant metrics`` serves it."""
    dashboard = _dashboard(request)
    data = await dashboard.run(queue_metrics.snapshot(dashboard.sql, dashboard.app.schema))
    return Response(queue_metrics.exposition(data), media_type="text/plain; version=0.0.4; charset=utf-8")
