"""XSS, CSRF, read-only and auth: each test passes only if the defence is there.

A naive dashboard (no autoescape, POSTs without a token, read-only that only
hides buttons, auth on pages but not on the event stream) fails them.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import psycopg
import pytest

import currant
from currant.dashboard.security import BasicAuth
from currant.dashboard.serve import Refused, check_exposure
from tests.dashboard.conftest import Served, csrf_token

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"


def _state(app: currant.App, job_id: int) -> str:
    job = app.get_job(job_id)
    assert job is not None
    return job.state


def test_everything_from_the_database_is_escaped(
    app: currant.App, dashboard: Served, db: psycopg.Connection[Any]
) -> None:
    queue = f'q"><b>{SCRIPT}'
    job_id = app.enqueue(f"task{SCRIPT}", (SCRIPT,), {IMG: SCRIPT}, queue=queue)
    db.execute(
        f"UPDATE \"{app.schema}\".jobs SET state = 'failed', finished_at = now(), errors = jsonb_build_array("
        "jsonb_build_object('attempt', 1, 'at', now(), 'error', %s::text, 'traceback', %s::text)) WHERE id = %s",
        (f"ValueError: {IMG}", f"Traceback {SCRIPT}", job_id),
    )
    db.execute(app.sql["register_worker"], {"hostname": f"host{IMG}", "pid": 1, "queues": [queue], "concurrency": 1})
    db.execute(app.sql["periodic_register"], {"name": f"p{SCRIPT}", "schedule": "* * * * *"})
    with dashboard.client() as client:
        pages = {
            path: client.get(path).text
            for path in ("/", "/jobs", "/jobs?state=failed", f"/jobs/{job_id}", "/workers", "/periodic")
        }
        pages["bulk"] = client.get(
            "/jobs/bulk", params={"action": "retry", "state": "failed", "queue": queue, "error": IMG}
        ).text
    for path, page in pages.items():
        assert "<script>alert" not in page and "<img src=x" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[f"/jobs/{job_id}"]
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages["/jobs?state=failed"]
    assert "host&lt;img" in pages["/workers"] and "p&lt;script&gt;" in pages["/periodic"]


def test_a_post_without_a_valid_token_changes_nothing(
    app: currant.App, dashboard: Served, world: dict[str, int]
) -> None:
    job_id = world["failed"]
    with dashboard.client() as client:
        page = client.get(f"/jobs/{job_id}").text
        good = csrf_token(page)
        assert client.post(f"/jobs/{job_id}/retry").status_code == 403  # no token
        assert client.post(f"/jobs/{job_id}/retry", data={"csrf": "0" * 64}).status_code == 403  # made up
        assert (
            client.post(
                f"/jobs/{job_id}/retry", data={"csrf": good}, headers={"Origin": "https://evil.example"}
            ).status_code
            == 403
        )  # another site
    with dashboard.client() as stranger:  # another browser: its own cookie, so the token is not its
        stranger.get("/")
        assert stranger.post(f"/jobs/{job_id}/retry", data={"csrf": good}).status_code == 403
        assert stranger.post("/jobs/bulk", data={"csrf": good, "action": "retry", "state": "failed"}).status_code == 403
    assert _state(app, job_id) == "failed"
    with dashboard.client() as client:  # the same request with its own page's token goes through
        token = csrf_token(client.get(f"/jobs/{job_id}").text)
        assert client.post(f"/jobs/{job_id}/retry", data={"csrf": token}).status_code == 303
    assert _state(app, job_id) == "queued"


def test_the_token_cookie_is_http_only_and_same_site(dashboard: Served) -> None:
    with dashboard.client() as client:
        cookie = client.get("/").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_pages_forbid_framing_and_foreign_scripts(dashboard: Served) -> None:
    with dashboard.client() as client:
        headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


def test_read_only_hides_every_action_and_refuses_it(
    app: currant.App, start_dashboard: Any, world: dict[str, int]
) -> None:
    served: Served = start_dashboard(read_only=True)
    with served.client() as client:
        pages = [
            client.get(path).text
            for path in (
                "/",
                "/jobs?state=failed",
                "/jobs?state=queued",
                f"/jobs/{world['failed']}",
                f"/jobs/{world['queued']}",
            )
        ]
        for page in pages:
            assert 'method="post"' not in page and 'id="bulk"' not in page
            assert "read-only" in page
        # A token is still handed out (the cookie), so refusals below are read-only's, not CSRF's.
        token = served.dashboard.csrf.token(client.cookies["currant_csrf"])
        posts = (
            (f"/jobs/{world['failed']}/retry", {}),
            (f"/jobs/{world['queued']}/cancel", {}),
            ("/jobs/bulk", {"action": "cancel"}),
            ("/jobs/bulk", {"action": "retry", "state": "failed"}),
        )
        for path, data in posts:
            response = client.post(path, data={"csrf": token, **data})
            assert response.status_code == 403 and "read-only" in response.text, path
        assert client.get("/jobs/bulk", params={"action": "cancel"}).status_code == 403
    assert _state(app, world["failed"]) == "failed" and _state(app, world["queued"]) == "queued"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_guards_every_path(start_dashboard: Any, world: dict[str, int]) -> None:
    served: Served = start_dashboard(credentials=("ops", "correct horse"))
    with served.client() as client:
        for path in (
            "/",
            "/jobs",
            f"/jobs/{world['failed']}",
            "/workers",
            "/periodic",
            "/health",
            "/static/style.css",
            "/events",
        ):
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Basic ")
        assert client.get("/", headers=_basic("ops", "wrong")).status_code == 401
        assert client.get("/", headers=_basic("root", "correct horse")).status_code == 401
        assert client.post(f"/jobs/{world['failed']}/retry", headers=_basic("ops", "wrong")).status_code == 401
        assert client.get("/", headers=_basic("ops", "correct horse")).status_code == 200
        assert client.get("/static/live.js", headers=_basic("ops", "correct horse")).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer x",
        "Basic !!!",
        "Basic " + base64.b64encode(b"ops").decode(),
        "Basic " + base64.b64encode(b"ops:correct horse!").decode(),
        "Basic " + base64.b64encode(b"ops:correct hors").decode(),
    ],
)
def test_basic_auth_refuses_malformed_and_near_miss_credentials(header: str | None) -> None:
    auth = BasicAuth(app=lambda *a: None, user="ops", password="correct horse")  # type: ignore[arg-type]
    assert not auth.allowed(header)
    assert auth.allowed("Basic " + base64.b64encode(b"ops:correct horse").decode())


def test_non_loopback_address_needs_auth_or_insecure() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(host, has_auth=False, insecure=False)
    for host in ("0.0.0.0", "192.168.1.10", "::", "dashboard.example.com"):
        with pytest.raises(Refused, match="CURRANT_DASHBOARD_USER"):
            check_exposure(host, has_auth=False, insecure=False)
        check_exposure(host, has_auth=True, insecure=False)
        check_exposure(host, has_auth=False, insecure=True)


def test_csrf_field_is_in_every_action_form(dashboard: Served, world: dict[str, int]) -> None:
    with dashboard.client() as client:
        forms = re.findall(r'<form method="post".*?</form>', client.get(f"/jobs/{world['failed']}").text, re.S)
        forms += re.findall(
            r'<form method="post".*?</form>',
            client.get("/jobs/bulk", params={"action": "retry", "state": "failed"}).text,
            re.S,
        )
    assert len(forms) == 2
    assert all('name="csrf"' in form for form in forms)
