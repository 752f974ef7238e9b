"""Retry and cancel from the dashboard, one job and in bulk, over real HTTP."""

from __future__ import annotations

import re
from typing import Any

import psycopg

import currant
from tests.dashboard.conftest import Served, csrf_token


def _state(app: currant.App, job_id: int) -> str:
    job = app.get_job(job_id)
    assert job is not None
    return job.state


def _post(client: Any, path: str, page: str, **fields: str) -> Any:
    """POST a form the way the browser does: with the token of the page the form came from."""
    return client.post(path, data={"csrf": csrf_token(client.get(page).text), **fields})


def test_retry_button_queues_a_failed_job_again(app: currant.App, dashboard: Served, world: dict[str, int]) -> None:
    job_id = world["failed"]
    with dashboard.client() as client:
        page = client.get(f"/jobs/{job_id}").text
        assert f'action="/jobs/{job_id}/retry"' in page
        response = client.post(f"/jobs/{job_id}/retry", data={"csrf": csrf_token(page)})
        assert response.status_code == 303
        after = client.get(response.headers["location"]).text
    assert _state(app, job_id) == "queued"
    assert "Queued again." in after and '<span class="state queued" id="job-state">queued</span>' in after
    job = app.get_job(job_id)
    assert job is not None and job.max_attempts == 4 and len(job.errors) == 3  # one more attempt; history kept


def test_retry_from_a_stale_page_says_it_did_nothing(
    app: currant.App, dashboard: Served, world: dict[str, int]
) -> None:
    job_id = world["failed"]
    with dashboard.client() as client:
        token = csrf_token(client.get(f"/jobs/{job_id}").text)
        assert client.post(f"/jobs/{job_id}/retry", data={"csrf": token}).status_code == 303
        again = client.post(f"/jobs/{job_id}/retry", data={"csrf": token})  # pressed again on the old page
        assert "Not retried" in client.get(again.headers["location"]).text
    job = app.get_job(job_id)
    assert job is not None and job.state == "queued" and job.max_attempts == 4  # retried once, not twice


def test_cancel_button_cancels_a_waiting_job_and_asks_a_running_one_to_stop(
    app: currant.App, dashboard: Served, world: dict[str, int]
) -> None:
    with dashboard.client() as client:
        page = client.get(f"/jobs/{world['queued']}").text
        assert 'id="cancel"' in page
        response = _post(client, f"/jobs/{world['queued']}/cancel", f"/jobs/{world['queued']}")
        assert "Cancelled." in client.get(response.headers["location"]).text
        response = _post(client, f"/jobs/{world['running']}/cancel", f"/jobs/{world['running']}")
        assert "Cancel requested" in client.get(response.headers["location"]).text
    assert _state(app, world["queued"]) == "cancelled"
    running = app.get_job(world["running"])
    assert running is not None and running.state == "running" and running.cancel_requested


def test_bulk_retry_by_filter_counts_confirms_and_changes_only_the_matching_jobs(
    app: currant.App, dashboard: Served, db: psycopg.Connection[Any]
) -> None:
    mail = app.enqueue_many("fail", [("m",)] * 5, queue="mail")
    other = app.enqueue_many("fail", [("o",)] * 3, queue="default")
    db.execute(f"UPDATE \"{app.schema}\".jobs SET state = 'failed', attempts = 1, finished_at = now()")
    with dashboard.client() as client:
        listing = client.get("/jobs", params={"state": "failed", "queue": "mail"}).text
        link = re.search(r'<a class="button" id="bulk" href="([^"]+)"', listing)
        assert link is not None
        confirm = client.get(link.group(1).replace("&amp;", "&")).text
        assert re.search(r'id="bulk-count">5 jobs \(failed, queue mail\)', confirm)
        response = client.post(
            "/jobs/bulk", data={"csrf": csrf_token(confirm), "action": "retry", "state": "failed", "queue": "mail"}
        )
        assert response.status_code == 303
        assert "Retried 5 jobs." in client.get(response.headers["location"]).text
    assert [_state(app, i) for i in mail] == ["queued"] * 5
    assert [_state(app, i) for i in other] == ["failed"] * 3


def test_bulk_cancel_cancels_waiting_jobs_only(app: currant.App, dashboard: Served, world: dict[str, int]) -> None:
    with dashboard.client() as client:
        confirm = client.get("/jobs/bulk", params={"action": "cancel"}).text
        assert re.search(r'id="bulk-count">4 jobs \(waiting, queued, scheduled, retrying\)', confirm)
        client.post("/jobs/bulk", data={"csrf": csrf_token(confirm), "action": "cancel"})
    for state in ("waiting", "queued", "scheduled", "retrying"):
        assert _state(app, world[state]) == "cancelled", state
    for state in ("running", "succeeded", "failed"):
        assert _state(app, world[state]) == state


def test_bulk_retry_is_refused_for_states_it_cannot_retry(dashboard: Served, world: dict[str, int]) -> None:
    with dashboard.client() as client:
        assert client.get("/jobs/bulk", params={"action": "retry", "state": "running"}).status_code == 400
        response = _post(client, "/jobs/bulk", f"/jobs/{world['failed']}", action="retry", state="succeeded")
        assert response.status_code == 400
