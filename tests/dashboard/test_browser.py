"""A real browser (headless Chromium, driven by selenium) against a real
dashboard, database and worker: open the overview, filter failed jobs, open
one, press Retry, and watch it change state, live. A screenshot of every page
goes to ``screenshots/`` (or ``$CURRANT_SCREENSHOTS``), kept out of git.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import currant
from tests.conftest import ROOT, wait_for
from tests.dashboard.conftest import Served

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("CURRANT_SCREENSHOTS") or ROOT / "screenshots")
# The world's "running" job belongs to a made-up worker that never heartbeats: this worker declares it
# dead and rescues its job, but does not serve that job's queue (a rescued job runs alone, holding it up).
WORKER = ("--heartbeat", "0.2", "--dead-after", "5", "--queues", "browser,mail,reports")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = CHROMIUM
    # No network here: without the background-networking flags Chromium hangs on refused connections.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shoot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(800, min(int(height) + 40, 4000)))
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def _wait(driver: Any, timeout: float = 60) -> Any:
    # A live refresh swaps the page's elements: one found a moment ago may be gone; look again.
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def _click(driver: Any, by: str, value: str) -> None:
    """Click an element, finding it again if a live refresh replaced it meanwhile."""
    _wait(driver).until(lambda d: d.find_element(by, value).click() or True)


def _texts(driver: Any, css: str) -> list[str]:
    """The texts of the elements matching ``css``, read in one go from one version of the page."""
    texts: list[str] = _wait(driver).until(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, css)] or None)
    return texts


def test_filter_failed_open_one_retry_and_watch_it_succeed(
    app: currant.App, dashboard: Served, spawn_worker: Any, browser: Any, world: dict[str, int]
) -> None:
    # Real work for the overview and its chart, then one job that really fails (its first attempt raises).
    app.enqueue_many("noop", [()] * 300, queue="reports")
    app.enqueue_many("add", [(n, n) for n in range(150)], queue="mail")
    app.enqueue_many("discard", [("bad input",)] * 4, queue="mail")
    failing = app.enqueue("fail_once", ("browser",), max_attempts=1, queue="browser")
    worker = spawn_worker(*WORKER)
    wait_for(lambda: (job := app.get_job(failing)) is not None and job.state == "failed", message="the failure")

    browser.get(dashboard.url + "/")
    _wait(browser).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "table.queues")))
    _wait(browser).until(lambda d: "on" in d.find_element(By.ID, "live-status").get_attribute("class").split())
    _shoot(browser, "overview")

    _click(browser, By.LINK_TEXT, "Jobs")
    Select(browser.find_element(By.NAME, "state")).select_by_value("failed")
    _click(browser, By.CSS_SELECTOR, "form.filters button[type=submit]")
    _wait(browser).until(lambda d: "state=failed" in d.current_url)
    ids = _texts(browser, "table.jobs td.n a")
    assert str(failing) in ids and str(world["failed"]) in ids
    assert set(_texts(browser, "table.jobs span.state")) == {"failed"}
    _shoot(browser, "jobs-failed")

    _click(browser, By.LINK_TEXT, str(failing))
    _wait(browser).until(lambda d: d.find_element(By.ID, "job-state").text == "failed")
    assert "first attempt fails" in _texts(browser, ".attempt")[0]
    assert "Traceback" in _texts(browser, "pre.traceback")[0]
    _shoot(browser, "job-failed")

    # No worker while Retry is pressed, so the page shows the job queued before anything runs it.
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    _click(browser, By.ID, "retry")
    _wait(browser).until(lambda d: "Queued again." in d.find_element(By.TAG_NAME, "body").text)
    assert _texts(browser, "#job-state") == ["queued"]
    # No reload from here on: a worker runs attempt 2, and the page learns it through the event stream.
    spawn_worker(*WORKER)  # killed at teardown
    _wait(browser).until(
        lambda d: d.find_element(By.ID, "job-state").text == "succeeded",
        message=f"the page to show the job succeeded; the database says {app.get_job(failing)}",
    )
    assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed") or 0) >= 1
    assert "Queued again." in _texts(browser, "#outcome")[0]  # the same page, its live part swapped in place
    _shoot(browser, "job-retried")
    job = app.get_job(failing)
    assert job is not None and job.state == "succeeded" and job.attempts == 2

    for path, name in (
        ("/workers", "workers"),
        ("/periodic", "periodic"),
        ("/health", "health"),
        ("/jobs?state=failed&queue=mail", "jobs-mail-failed"),
        ("/jobs/bulk?action=retry&state=failed&queue=mail", "bulk-confirm"),
        (f"/jobs/{world['succeeded']}", "job-succeeded"),
    ):
        browser.get(dashboard.url + path)
        _wait(browser).until(expected_conditions.presence_of_element_located((By.TAG_NAME, "footer")))
        assert "Not done" not in browser.title, path
        _shoot(browser, name)
