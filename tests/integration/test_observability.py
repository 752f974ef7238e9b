"""Hooks, OpenTelemetry tracing, progress reports and the worker's Prometheus metrics."""

from __future__ import annotations

import logging
import re
import signal
import socket
import urllib.request
from typing import Any

import psycopg
import pytest

import currant
from tests.conftest import run_worker_here as run_worker
from tests.conftest import wait_for


class Recorder:
    """A hook that writes down what it sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def before_enqueue(self, event: currant.hooks.EnqueueEvent) -> None:
        event.headers["x-from"] = "recorder"
        self.seen.append(("before_enqueue", event.task, event.queue, event.count, event.transactional))

    def after_enqueue(self, event: currant.hooks.EnqueueEvent) -> None:
        self.seen.append(("after_enqueue", event.task, list(event.ids), type(event.error).__name__))

    def before_job(self, job: currant.JobContext) -> None:
        self.seen.append(("before_job", job.task, job.attempt, job.queue, job.headers, currant.current_job() is job))

    def after_job(self, job: currant.JobContext, outcome: currant.hooks.JobOutcome) -> None:
        self.seen.append(("after_job", job.task, job.attempt, outcome.status, outcome.error, outcome.result))

    def on_retry(self, job: currant.JobContext, outcome: currant.hooks.JobOutcome) -> None:
        self.seen.append(("on_retry", job.task, job.attempt, outcome.retry_in is not None))

    def on_failure(self, job: currant.JobContext, outcome: currant.hooks.JobOutcome) -> None:
        self.seen.append(("on_failure", job.task, job.attempt))


class Broken:
    def before_job(self, job: currant.JobContext) -> None:
        raise RuntimeError("a broken hook")

    async def after_enqueue(self, event: currant.hooks.EnqueueEvent) -> None:  # async: refused for a sync enqueue
        raise AssertionError("never awaited")


def test_hooks_see_every_enqueue_and_attempt(
    app: currant.App, caplog: pytest.LogCaptureFixture, db: psycopg.Connection[Any]
) -> None:
    recorder = app.add_hook(Recorder())
    app.add_hook(Broken())

    @app.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    @app.task(name="flaky", max_attempts=2, retry_backoff=0.01)
    def flaky() -> None:
        raise ValueError("nope")

    @app.task(name="adouble")
    async def adouble(x: int) -> int:
        return 2 * x

    one = double.enqueue(21)
    many = adouble.enqueue_many([(1,), (2,)])
    bad = flaky.enqueue()
    with pytest.raises(TypeError):
        double.enqueue(object())  # not encodable: no event at all (validation comes first)
    with caplog.at_level(logging.ERROR, "currant.hooks"):
        run_worker(app)
        db.execute(f"UPDATE \"{app.schema}\".jobs SET run_at = now(), state = 'queued' WHERE id = %s", (bad,))
        run_worker(app)
    seen = recorder.seen
    assert seen[:2] == [
        ("before_enqueue", "double", "default", 1, False),
        ("after_enqueue", "double", [one], "NoneType"),
    ]
    assert ("after_enqueue", "adouble", many, "NoneType") in seen
    assert ("before_job", "double", 1, "default", {"x-from": "recorder"}, True) in seen  # current_job() works
    assert ("before_job", "adouble", 1, "default", {"x-from": "recorder"}, True) in seen  # ... in async tasks too
    assert ("after_job", "double", 1, "succeeded", None, 42) in seen
    assert ("after_job", "flaky", 1, "retrying", "ValueError: nope", None) in seen
    assert ("on_retry", "flaky", 1, True) in seen
    assert ("after_job", "flaky", 2, "failed", "ValueError: nope", None) in seen
    assert ("on_failure", "flaky", 2) in seen
    assert not any(entry[0] == "on_failure" and entry[2] == 1 for entry in seen)
    # The broken hooks were logged, and nothing else suffered for them.
    assert "a broken hook" in caplog.text and "cannot run around a sync task or a sync enqueue" in caplog.text
    assert app.get_job(one).result == 42 and app.get_job(many[1]).result == 4  # type: ignore[union-attr]


def test_tracing_links_each_job_to_its_enqueue(app: currant.App) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from currant import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(app, tracer_provider=provider)
    inner = provider.get_tracer("test")

    @app.task(name="traced")
    def traced(x: int) -> None:
        with inner.start_as_current_span("inside the handler"):
            pass

    one = traced.enqueue(1)
    many = traced.enqueue_many([(2,), (3,)])
    run_worker(app)
    spans = exporter.get_finished_spans()
    sends = [s for s in spans if s.name == "currant.enqueue"]
    processes = {s.attributes["messaging.message.id"]: s for s in spans if s.name == "currant.process"}
    assert len(sends) == 2 and all(s.kind == trace.SpanKind.PRODUCER for s in sends)
    single, bulk = sorted(sends, key=lambda s: s.attributes["messaging.batch.message_count"])
    assert single.attributes["messaging.message.id"] == str(one)
    assert (single.attributes["messaging.system"], single.attributes["messaging.destination.name"]) == (
        "currant",
        "default",
    )
    assert set(processes) == {str(one), *map(str, many)}
    for job_id, span in processes.items():
        assert span.kind == trace.SpanKind.CONSUMER and span.attributes["messaging.operation.type"] == "process"
        producer = single if job_id == str(one) else bulk
        assert [link.context.span_id for link in span.links] == [producer.context.span_id]
    children = [s for s in spans if s.name == "inside the handler"]
    assert {c.parent.span_id for c in children} == {s.context.span_id for s in processes.values()}


def test_an_idle_tracer_costs_one_check_and_adds_nothing(app: currant.App) -> None:
    """instrument() with no tracer provider anywhere (the API alone): no headers, no spans, jobs run."""
    from opentelemetry import trace

    from currant import tracing

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # no SDK set in this process
    hook = tracing.instrument(app)

    @app.task(name="untraced")
    def untraced() -> bool:
        return trace.get_current_span().get_span_context().is_valid

    event = currant.hooks.EnqueueEvent("untraced", "default", 1, False)
    hook.before_enqueue(event)
    assert event.headers == {} and event.state == {}
    job_id = untraced.enqueue()
    assert app.hooks.for_jobs() is None  # a worker does not call it around jobs at all
    run_worker(app)
    assert app.get_job(job_id).result is False
    assert hook._jobs == {}


def test_an_idle_hook_is_called_once_it_wakes(app: currant.App) -> None:
    """A hook idle at start is skipped around jobs; awake, it is called from the next heartbeat on."""
    import threading

    class Sleepy:
        def __init__(self) -> None:
            self.awake = False
            self.asked_awake = threading.Event()  # idle() was asked after waking: a heartbeat refreshed
            self.seen: list[str] = []

        def idle(self) -> bool:
            if self.awake:
                self.asked_awake.set()
            return not self.awake

        def after_job(self, job: currant.JobContext, outcome: currant.hooks.JobOutcome) -> None:
            self.seen.append(job.task)

    sleepy = app.add_hook(Sleepy())

    @app.task(name="later")
    def later() -> None:
        pass

    @app.task(name="first")
    def first() -> None:
        sleepy.awake = True
        assert sleepy.asked_awake.wait(30), "no heartbeat asked the hooks again"
        later.enqueue()

    first.enqueue()
    run_worker(app)
    assert sleepy.seen == ["later"]


def test_progress_is_stored_and_shown(app: currant.App, spawn_worker: Any, database_dsn: str) -> None:
    job = app.enqueue("report_progress", (5,))
    worker = spawn_worker()
    wait_for(
        lambda: (app.get_job(job).progress or {}).get("done") == 3,
        timeout=30,  # type: ignore[union-attr]
        message="the third report stored",
    )
    report = app.get_job(job).progress  # type: ignore[union-attr]
    assert report["total"] == 5 and report["note"] == "step 3" and report["attempt"] == 1 and report["at"], report
    with psycopg.connect(database_dsn, autocommit=True) as conn:  # released: the task finishes
        conn.execute(f'INSERT INTO "{app.schema}".ledger (key) VALUES (%s)', (f"go:{job}",))
    wait_for(lambda: app.get_job(job).state == "succeeded", timeout=30, message="finished")  # type: ignore[union-attr]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    with pytest.raises(TypeError, match="done must be a number"):
        currant.JobContext(1, 1, "t").progress("half")  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.parametrize("processes", [1, 2])
def test_worker_metrics_count_a_known_workload(app: currant.App, spawn_worker: Any, processes: int) -> None:
    port = _free_port()
    app.enqueue_many("noop", [()] * 20)
    app.enqueue("fail", ("once",), max_attempts=2)  # retried, then failed (backoff 0.2 s)
    worker = spawn_worker(
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        "--processes",
        str(processes),
        "--poll-interval",
        "0.1",
    )

    def finished(outcome: str, task: str) -> float:
        try:
            samples = _scrape(port)
        except OSError:
            return -1.0  # the metrics server is not up yet
        return samples.get(f'currant_jobs_finished_total{{outcome="{outcome}",queue="default",task="{task}"}}', 0.0)

    wait_for(
        lambda: finished("failed", "fail") == 1 and finished("succeeded", "noop") == 20,
        timeout=60,
        interval=0.2,
        message="the workload counted",
    )
    samples = _scrape(port)
    assert finished("retried", "fail") == 1
    assert samples['currant_job_duration_seconds_count{queue="default",task="noop"}'] == 20
    assert samples['currant_job_duration_seconds_bucket{le="+Inf",queue="default",task="noop"}'] == 20
    assert samples['currant_job_wait_seconds_count{queue="default"}'] == 22
    assert samples["currant_claims_total"] >= 2 and samples["currant_claim_batch_size_sum"] == 22
    assert samples["currant_completion_flush_seconds_count"] >= 2
    assert samples["currant_worker_running_jobs"] == 0
    if processes == 2:
        assert samples["currant_worker_processes_up"] == 2
    assert re.search(r"^currant_db_reconnects_total\{connection=\"claims\"\} 0", _text(port), re.MULTILINE)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def _text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def test_database_metrics_describe_the_queue(app: currant.App, database_dsn: str, db: psycopg.Connection[Any]) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    app.enqueue_many("noop", [()] * 3)
    app.enqueue("noop", queue="mail", delay=3600)
    failed = app.enqueue("noop", queue="mail")
    db.execute(f"UPDATE \"{app.schema}\".jobs SET state = 'failed', finished_at = now() WHERE id = %s", (failed,))
    db.execute(f"UPDATE \"{app.schema}\".jobs SET run_at = now() - interval '90 seconds' WHERE state = 'queued'")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "currant",
            "--dsn",
            database_dsn,
            "--schema",
            app.schema,
            "metrics",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        samples = wait_for(lambda: _try_scrape(port), timeout=30, message="the metrics server answers")
        assert samples['currant_queue_jobs{queue="default",state="queued"}'] == 3
        assert samples['currant_queue_jobs{queue="mail",state="scheduled"}'] == 1
        assert samples['currant_queue_jobs{queue="mail",state="failed"}'] == 1
        assert samples['currant_queue_jobs{queue="mail",state="queued"}'] == 0
        assert 90 <= samples['currant_queue_oldest_ready_seconds{queue="default"}'] < 200
        assert samples["currant_workers_alive"] == 0 and samples["currant_jobs_table_bytes"] > 0
        assert samples["currant_notify_queue_usage_ratio"] == 0
        assert "currant_oldest_xmin_age_seconds" in samples and "currant_jobs_dead_tuples" in samples
    finally:
        server.send_signal(signal.SIGINT)
        _out, errors = server.communicate(timeout=10)
    assert server.returncode == 0 and "Traceback" not in errors, errors


def _try_scrape(port: int) -> dict[str, float] | None:
    try:
        return _scrape(port)
    except OSError:
        return None


def test_a_rescued_job_is_counted_by_the_worker_that_rescued_it(app: currant.App, spawn_worker: Any) -> None:
    leases = ("--heartbeat", "0.2", "--dead-after", "1.0", "--poll-interval", "0.1")
    job_id = app.enqueue("record_slowly", ("slow", 1.5))
    victim = spawn_worker(*leases)
    wait_for(lambda: app.get_job(job_id).state == "running", message="the job running")
    victim.kill()  # SIGKILL mid-handler: only a rescue can finish the job
    port = _free_port()
    rescuer = spawn_worker(*leases, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=30, message="the job rescued and rerun")
    key = 'currant_jobs_finished_total{{outcome="{}",queue="default",task="record_slowly"}}'
    samples = wait_for(
        lambda: (s := _try_scrape(port)) is not None and s.get(key.format("succeeded")) == 1 and s,
        timeout=10,
        message="the rerun counted",
    )
    assert samples[key.format("rescued")] == 1
    assert key.format("failed") not in samples
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait(30) == 0
