"""Every page over real HTTP, against a real PostgreSQL with a job in every state."""

from __future__ import annotations

import html
import re
from typing import Any

import psycopg

import currant
from currant.dashboard import reads
from currant.dashboard.filters import JobFilter
from tests.dashboard.conftest import Served


def _ids_on(page: str) -> list[int]:
    """Job ids of the job list's rows, in order."""
    return [int(m) for m in re.findall(r'<td class="n"><a href="[^"]*/jobs/(\d+)">', page)]


def test_overview_shows_each_queue_with_its_waiting_jobs_and_the_totals(
    dashboard: Served, world: dict[str, int], db: psycopg.Connection[Any], app: currant.App
) -> None:
    # What workers reported in this minute (the activity table), as maintain() records it.
    db.execute(
        f"INSERT INTO \"{app.schema}\".activity VALUES (date_trunc('minute', now()), 'mail', 'x',"
        " 'failed', 7), (date_trunc('minute', now()), 'mail', 'x', 'succeeded', 120)"
    )
    with dashboard.client() as client:
        page = client.get("/").text
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<tr>\s*<td><a href=\"[^\"]*\">([^<]+)</a></td>.*?</tr>", page, re.S)
    }
    assert set(rows) == {"default", "mail"}
    cells = lambda queue: re.findall(r'<td class="n[^"]*">(?:<a [^>]*>)?([^<]*)', rows[queue])
    # waiting, queued, scheduled, retrying, oldest ready, in/s, out/s, succeeded 1 h, failed 1 h, retried 1 h, workers
    assert cells("mail")[:4] == ["0", "1", "0", "0"]
    assert cells("default")[:4] == ["1", "0", "1", "1"]
    assert cells("mail")[7:9] == ["120", "7"]
    assert cells("mail")[-1] == "1" and cells("default")[-1] == "1"  # the registered worker serves both
    assert re.search(r'<span class="num">1</span><span class="label">running on 1 worker<', page)
    assert re.search(r'<span class="num">1</span><span class="label">failed<', page)
    assert re.search(r'<span class="num">1</span><span class="label">cancelled<', page)
    assert "<svg" in page and 'class="finished"' in page


def test_the_chart_counts_enqueued_and_finished_per_minute_from_the_small_tables(
    app: currant.App, db: psycopg.Connection[Any]
) -> None:
    schema = f'"{app.schema}"'
    db.execute(
        f"INSERT INTO {schema}.id_marks VALUES (date_trunc('minute', now()) - interval '3 minutes', 100),"
        f" (date_trunc('minute', now()) - interval '2 minutes', 130)"
    )
    db.execute(
        f"INSERT INTO {schema}.activity VALUES (date_trunc('minute', now()) - interval '2 minutes', 'q', 't',"
        " 'succeeded', 25), (date_trunc('minute', now()) - interval '2 minutes', 'q', 't', 'failed', 2)"
    )
    data = app.run_plan(reads.overview_activity(app.sql))
    chart = data["chart"]
    assert len(chart) == 60
    two_ago = chart[-3]
    assert (two_ago["enqueued"], two_ago["finished"], two_ago["failed"]) == (30, 27, 2)
    assert chart[-4]["enqueued"] == 0  # the first mark of the hour has none before it to subtract
    assert data["queues"]["q"]["hour"] == {"succeeded": 25, "failed": 2}


def test_jobs_page_lists_every_state_and_filters_live_in_the_url(dashboard: Served, world: dict[str, int]) -> None:
    with dashboard.client() as client:
        everything = client.get("/jobs").text
        assert sorted(_ids_on(everything)) == sorted(v for k, v in world.items() if k != "worker")
        for state in ("queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"):
            assert _ids_on(client.get("/jobs", params={"state": state}).text) == [world[state]], state
        assert sorted(_ids_on(client.get("/jobs", params={"queue": "mail"}).text)) == sorted(
            [world["queued"], world["failed"]]
        )
        assert sorted(_ids_on(client.get("/jobs", params={"task": "fail"}).text)) == sorted(
            [world["failed"], world["retrying"]]
        )
        assert _ids_on(client.get("/jobs", params={"error": "BOOM"}).text) == [world["failed"]]
        # The form keeps what was asked: the filter is in the page as well as the URL.
        failed_page = client.get("/jobs", params={"state": "failed", "queue": "mail"}).text
        assert '<option value="failed" selected>' in failed_page and 'name="queue" value="mail"' in failed_page
        # An id goes straight to its job.
        jump = client.get("/jobs", params={"id": str(world["failed"])})
        assert jump.status_code == 303 and jump.headers["location"].endswith(f"/jobs/{world['failed']}")
        assert client.get("/jobs", params={"state": "lost"}).status_code == 400
        assert client.get("/jobs", params={"before": "1 OR 1=1"}).status_code == 400


def test_error_filter_takes_percent_and_underscore_literally(
    app: currant.App, dashboard: Served, db: psycopg.Connection[Any]
) -> None:
    literal, wildcard = app.enqueue("echo", ()), app.enqueue("echo", ())
    for job_id, message in ((literal, "disk 100% full"), (wildcard, "disk 100 full")):
        db.execute(
            f"UPDATE \"{app.schema}\".jobs SET state = 'failed', errors = jsonb_build_array("
            "jsonb_build_object('error', %s::text)) WHERE id = %s",
            (message, job_id),
        )
    with dashboard.client() as client:
        assert _ids_on(client.get("/jobs", params={"error": "100%"}).text) == [literal]


def test_keyset_pages_cover_every_job_once_newest_first(app: currant.App, dashboard: Served) -> None:
    ids = app.enqueue_many("noop", [()] * 120)
    seen: list[int] = []
    with dashboard.client() as client:
        url = "/jobs?state=queued"
        while url:
            page = client.get(url).text
            seen += _ids_on(page)
            older = re.search(r'<a href="([^"]*)">older', page)
            url = html.unescape(older.group(1)) if older else ""
            assert "offset" not in url.lower()
    assert seen == sorted(ids, reverse=True)
    assert len(seen) == 120


def test_task_and_error_filters_search_a_bounded_window_and_go_on_below_it(app: currant.App) -> None:
    matching = app.enqueue("wanted", ())
    app.enqueue_many("other", [()] * 30)
    where = JobFilter(task="wanted")
    first = app.run_plan(reads.job_page(app.sql, where, limit=5, window=10))
    assert first["jobs"] == [] and first["scanned"] == 10  # only the 10 newest were read
    cursor = first["next_before"]
    found: list[int] = []
    while cursor is not None and not found:
        page = app.run_plan(reads.job_page(app.sql, JobFilter(task="wanted", before=cursor), limit=5, window=10))
        found = [job["id"] for job in page["jobs"]]
        cursor = page["next_before"]
    assert found == [matching]


def test_job_page_shows_arguments_result_errors_tracebacks_and_worker(dashboard: Served, world: dict[str, int]) -> None:
    with dashboard.client() as client:
        queued = client.get(f"/jobs/{world['queued']}").text
        assert "&#34;ready&#34;" in queued and "&#34;flag&#34;: true" in queued  # args and kwargs, decoded
        succeeded = client.get(f"/jobs/{world['succeeded']}").text
        assert re.search(r'<pre id="result">5</pre>', succeeded)
        assert "test-host, pid 4242 (alive" in succeeded
        failed = client.get(f"/jobs/{world['failed']}").text
        assert failed.count("ValueError: boom") >= 3  # every attempt's error...
        assert failed.count("Traceback (most recent call last)") == 3  # ...and its full traceback
        assert "tests/apps/jobs.py&#34;, line 3" in failed
        assert client.get("/jobs/999999").status_code == 404


def test_workers_page_lists_live_workers(dashboard: Served, world: dict[str, int]) -> None:
    with dashboard.client() as client:
        page = client.get("/workers").text
    assert "test-host" in page and "4242" in page and "default, mail" in page
    assert "No worker died in the last day." in page


def test_periodic_page_shows_last_and_next_tick(
    app: currant.App, dashboard: Served, db: psycopg.Connection[Any]
) -> None:
    db.execute(app.sql["periodic_register"], {"name": "nightly", "schedule": "0 3 * * *"})
    db.execute(f"UPDATE \"{app.schema}\".periodic SET last_tick = '2026-01-10 03:00:00+00'")
    with dashboard.client() as client:
        page = client.get("/periodic").text
    assert "nightly" in page and "0 3 * * *" in page
    assert "2026-01-10 03:00:00" in page and "2026-01-11 03:00:00" in page
    assert "overdue" in page  # that next tick is long past: no worker enqueued it


def test_health_page_names_the_oldest_transaction(dashboard: Served, database_dsn: str) -> None:
    with psycopg.connect(database_dsn, application_name="holds-xmin") as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")  # a snapshot, held until the transaction ends
        pid = holder.info.backend_pid
        with dashboard.client() as client:
            page = client.get("/health").text
            checks = client.get("/health", params={"format": "json"}).json()
        holder.rollback()
    assert f"session pid {pid} (holds-xmin)" in page
    names = [check["name"] for check in checks["checks"]]
    assert names == ["Jobs table size", "Last vacuum", "Oldest transaction", "NOTIFY queue", "Connections"]
    assert all(check["value"] for check in checks["checks"])
    assert "of the NOTIFY queue used" in page and "live rows" in page


def test_metrics_serves_the_queue_metrics_for_prometheus(dashboard: Served, world: dict[str, int]) -> None:
    with dashboard.client() as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(line.rsplit(" ", 1) for line in reply.text.splitlines() if line and not line.startswith("#"))
    expected = {
        ("default", "waiting"): 1,
        ("default", "scheduled"): 1,
        ("default", "retrying"): 1,
        ("mail", "queued"): 1,
        ("mail", "failed"): 1,
        ("default", "cancelled"): 1,
        ("default", "queued"): 0,
    }
    for (queue, state), count in expected.items():
        assert float(samples[f'currant_queue_jobs{{queue="{queue}",state="{state}"}}']) == count, (queue, state)
    assert float(samples["currant_workers_alive"]) == 1
    assert float(samples["currant_jobs_table_bytes"]) > 0
