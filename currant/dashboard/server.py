"""The dashboard as an ASGI application (Starlette): routes and middleware.

``asgi_app(app)`` is what ``python -m currant dashboard`` serves, and what a
FastAPI, Starlette or Django ASGI project mounts (see the README). It needs no
lifespan events: pools open on first use and the live hub starts with its
first client.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import App
from . import actions, pages
from .security import BasicAuth, SecurityHeaders
from .service import Dashboard

USER_ENV = "CURRANT_DASHBOARD_USER"
PASSWORD_ENV = "CURRANT_DASHBOARD_PASSWORD"


def credentials_from_env() -> tuple[str, str] | None:
    """(user, password) when both variables are set and not empty, else None."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    return (user, password) if user and password else None


def asgi_app(
    app: App, read_only: bool = False, *, credentials: tuple[str, str] | None = None, use_env: bool = True
) -> Starlette:
    """The dashboard of ``app`` as an ASGI app.

    Basic auth is required when ``credentials`` are given or, with ``use_env``,
    when ``CURRANT_DASHBOARD_USER`` and ``CURRANT_DASHBOARD_PASSWORD`` are set.
    ``read_only`` hides every action and refuses it.
    """
    dashboard = Dashboard(app, read_only=read_only)
    if credentials is None and use_env:
        credentials = credentials_from_env()
    middleware = [Middleware(SecurityHeaders)]
    if credentials is not None:
        middleware.append(Middleware(BasicAuth, user=credentials[0], password=credentials[1]))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Only when served standalone: a host framework does not run a mounted app's lifespan.
        yield
        await dashboard.hub.close()

    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/jobs", pages.jobs, name="jobs"),
        Route("/jobs/bulk", pages.bulk_confirm, name="bulk_confirm"),
        Route("/jobs/bulk", actions.bulk, methods=["POST"], name="bulk"),
        Route("/jobs/{job_id:int}", pages.job, name="job"),
        Route("/jobs/{job_id:int}/retry", actions.retry, methods=["POST"], name="retry"),
        Route("/jobs/{job_id:int}/cancel", actions.cancel, methods=["POST"], name="cancel"),
        Route("/workers", pages.workers, name="workers"),
        Route("/periodic", pages.periodic, name="periodic"),
        Route("/health", pages.health_page, name="health"),
        Route("/events", pages.events, name="events"),
        Route("/metrics", pages.metrics, name="metrics"),
        Mount("/static", StaticFiles(packages=[("currant.dashboard", "static")]), name="static"),
    ]
    starlette = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    starlette.state.dashboard = dashboard
    return starlette
