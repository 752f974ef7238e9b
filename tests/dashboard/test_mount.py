"""The dashboard mounted in another ASGI app, as the README shows: under a
Starlette (or FastAPI) Mount, and behind a plain ASGI dispatcher like a Django
project's asgi.py. Links, static files, the event stream and actions all
carry the prefix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import currant
from currant.dashboard import asgi_app
from tests.dashboard.conftest import csrf_token, serve


@pytest.fixture
def own_app(database_dsn: str, schema_name: str, app: currant.App) -> Iterator[currant.App]:
    instance = currant.App(database_dsn, schema=schema_name)
    yield instance
    instance.close()


def _host_app(kind: str, dashboard: Any) -> Any:
    if kind == "starlette":
        return Starlette(
            routes=[
                Route("/", lambda request: PlainTextResponse("the host's own page")),
                Mount("/queue", app=dashboard),
            ]
        )

    async def django_like(scope: Any, receive: Any, send: Any) -> None:
        """What a Django asgi.py does: paths under /queue go to the dashboard, the rest to Django."""
        if scope["type"] == "http" and (scope["path"] == "/queue" or scope["path"].startswith("/queue/")):
            await dashboard(dict(scope, root_path=scope.get("root_path", "") + "/queue"), receive, send)
        else:
            await PlainTextResponse("the host's own page")(scope, receive, send)

    return django_like


@pytest.mark.parametrize("kind", ["starlette", "django-style"])
def test_mounted_under_a_prefix(kind: str, own_app: currant.App, app: currant.App) -> None:
    failed = app.enqueue("fail", ("x",))
    app.run_plan(iter_update(app, failed))
    server, thread, url = serve(_host_app(kind, asgi_app(own_app, use_env=False)))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/").text == "the host's own page"
            first = client.get("/queue/")
            assert "path=/queue/" in first.headers["set-cookie"].lower()  # the token's cookie stays under the prefix
            page = first.text
            assert 'href="/queue/jobs"' in page and 'href="/queue/static/style.css"' in page
            assert 'data-events="/queue/events"' in page
            assert client.get("/queue/static/live.js").status_code == 200
            job_page = client.get(f"/queue/jobs/{failed}").text
            assert re.search(rf'action="/queue/jobs/{failed}/retry"', job_page)
            response = client.post(f"/queue/jobs/{failed}/retry", data={"csrf": csrf_token(job_page)})
            assert response.status_code == 303 and response.headers["location"].startswith(f"/queue/jobs/{failed}")
    finally:
        server.should_exit = True
        thread.join(30)
    job = app.get_job(failed)
    assert job is not None and job.state == "queued"


def iter_update(app: currant.App, job_id: int) -> Any:
    """A one-step plan: the job failed (as a worker records it)."""
    yield (
        "rowcount",
        f"UPDATE \"{app.schema}\".jobs SET state = 'failed', finished_at = now() WHERE id = %(id)s",
        {"id": job_id},
    )
