"""Hostile inputs: malformed payloads in job rows (T34, T35) and names (T26, T41)."""

from __future__ import annotations

from typing import Any

import pytest

import currant
from currant import codec
from tests.apps.jobs import WEIRD_QUEUE, WEIRD_TASK
from tests.conftest import wait_for, wait_listening
from tests.faults.helpers import FAST, ledger_rows

MALFORMED = {
    "reserved byte 0xc1": b"\xc1",
    "truncated": b"\x92\x91\xa5ab",
    "trailing data": codec.encode_payload(("x",), None) + b"\x00",
    "bad utf-8": b"\x92\x91\xa2\xff\xfe\x80",
    "deep nesting": b"\x91" * 200_000 + b"\xc0",
    "array32 bomb": b"\xdd\xff\xff\xff\xff",
    "str32 bomb": b"\x92\x91\xdb\xff\xff\xff\xff\x80",
    "map32 bomb": b"\xdf\xff\xff\xff\xff",
    "ext type 5": b"\x92\x91\xd4\x05\x00\x80",
    "timestamp ext": b"\x92\x91\xd6\xff\x00\x00\x00\x01\x80",
    "int map key": b"\x92\x90\x81\x01\x02",
    "not [args, kwargs]": b"\x80",
    "empty": b"",
}


@pytest.mark.parametrize("impl", ["c", "python"])
def test_malformed_payloads_fail_alone(
    app: currant.App, db: Any, spawn_worker: Any, schema_name: str, impl: str
) -> None:
    if impl == "c" and currant.__impl__ != "c":
        pytest.skip("compiled core not built")
    bad: dict[int, str] = {}
    good: dict[int, str] = {}
    insert = f'INSERT INTO "{schema_name}".jobs (queue, task, payload) VALUES (%s, %s, %s) RETURNING id'
    for i, (name, payload) in enumerate(MALFORMED.items()):
        key = f"good{i}"
        good[db.execute(insert, ("default", "record", codec.encode_payload((key,), None))).fetchone()[0]] = key
        bad[db.execute(insert, ("default", "record", payload)).fetchone()[0]] = name
    worker = spawn_worker("--burst", "--batch-size", "100", *FAST, env={"CURRANT_IMPL": impl})
    assert worker.wait(60) == 0, worker.log()[-3000:]  # alive to the end, exited by --burst
    rows = {
        row[0]: row[1:]
        for row in db.execute(f'SELECT id, state::text, attempts, errors FROM "{schema_name}".jobs').fetchall()
    }
    for job_id, name in bad.items():
        state, attempts, errors = rows[job_id]
        assert (state, attempts) == ("failed", 1), (name, state, attempts, errors)
        assert len(errors) == 1 and errors[0]["error"].startswith("PayloadError: "), (name, errors)
        print(f"{name!r:24} -> {errors[0]['error']}")
    for job_id in good:
        assert rows[job_id][:2] == ("succeeded", 1)
    assert sorted(key for key, _, _ in ledger_rows(db, schema_name)) == sorted(good.values())
    # One claim took good and bad rows together (the claim stamps started_at
    # once per statement), and the bad ones did not abort it: each was recorded
    # on its own job, never raised in the worker. The log has one ERROR line
    # per bad job (a job that failed for good), naming it, and nothing else.
    claims = db.execute(f'SELECT count(DISTINCT started_at) FROM "{schema_name}".jobs').fetchone()[0]
    assert claims == 1, claims
    log = worker.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert "Traceback" not in log, log[-3000:]
    assert len(errors) == len(bad), errors
    for job_id in bad:
        assert (
            sum(f"job {job_id} (record) failed for good after 1 attempts: PayloadError: " in line for line in errors)
            == 1
        ), (job_id, errors)


# -- names -------------------------------------------------------------------------------

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=1"


@pytest.mark.parametrize(
    "field, value",
    [
        ("queue", "a\x00b"),
        ("task", "a\x00b"),
        ("queue", "q" * 300),
        ("task", "t" * 300),
        ("queue", ""),
        ("task", ""),
    ],
)
def test_invalid_names_are_refused_before_any_io(field: str, value: str) -> None:
    """ValueError from validation, never a connection error: the DSN points nowhere."""
    app = currant.App(UNREACHABLE, schema="nowhere", auto_migrate=False)
    task, options = (value, {}) if field == "task" else ("noop", {"queue": value})
    with pytest.raises(ValueError):
        app.enqueue(task, (), **options)
    with pytest.raises(ValueError):
        app.enqueue_many(task, [()], **options)
    if value:  # an empty name in the decorator means "use the default"
        with pytest.raises(ValueError):
            app.task(**{"name" if field == "task" else "queue": value})(lambda: None)


@pytest.mark.parametrize("schema", ['x"; DROP SCHEMA public; --', "a\x00b", "Upper", "s" * 60, "ünï", "1abc"])
def test_invalid_schema_names_are_refused(schema: str) -> None:
    with pytest.raises(ValueError):
        currant.App(UNREACHABLE, schema=schema)


@pytest.mark.parametrize(
    "name",
    [
        "x'); DROP TABLE jobs;--",
        '"; NOTIFY x; --',
        "semi;colon",
        "ünïcødé ✓ 🍒",
        "é" * 200,  # 200 characters, 400 bytes
        "spaces and\ttabs\nnewline",
        "$1 %s %(x)s {schema}",
    ],
)
def test_odd_names_are_stored_verbatim(app: currant.App, db: Any, schema_name: str, name: str) -> None:
    before = db.execute(f'SELECT count(*) FROM "{schema_name}".jobs').fetchone()[0]
    one = app.enqueue(name, ("a",), queue=name)
    many = app.enqueue_many(name, [("b",)], queue=name)
    for job_id in (one, *many):
        job = app.get_job(job_id)
        assert job is not None and (job.task, job.queue) == (name, name)
    assert db.execute(f'SELECT count(*) FROM "{schema_name}".jobs').fetchone()[0] == before + 2
    assert db.execute("SELECT to_regclass(%s)", (f'"{schema_name}".jobs',)).fetchone()[0] is not None


def test_odd_task_and_queue_names_run_end_to_end(
    app: currant.App, db: Any, spawn_worker: Any, schema_name: str
) -> None:
    job_id = app.enqueue(WEIRD_TASK, ("w1",), queue=WEIRD_QUEUE)
    worker = spawn_worker("--burst", "--queues", WEIRD_QUEUE, *FAST)
    assert worker.wait(30) == 0, worker.log()[-3000:]
    job = app.get_job(job_id)
    assert job is not None and (job.state, job.result, job.task, job.queue) == (
        "succeeded",
        "w1",
        WEIRD_TASK,
        WEIRD_QUEUE,
    )
    assert [key for key, _, _ in ledger_rows(db, schema_name)] == ["w1"]


# -- notification payloads -------------------------------------------------------------

# Raw payloads the listener must log and ignore (wakeup.py: ``r:<queue>``,
# ``d:<epoch>:<queue>`` and ``c:<job id>`` are the only forms).
MALFORMED_NOTIFICATIONS = [
    "cancel:{victim}",
    "c:abc",
    "c:",
    "c:{victim}x",
    "",
    "x:{victim}",
    " c:{victim}",
    "d:soon:default",
    "d:",
]
# Well-formed, but about nothing this worker holds or serves: ignored without a word.
IGNORED_NOTIFICATIONS = ["c:{unknown}", "c:-1", "r:", "r:no-such-queue", "d:1:no-such-queue", "d:nan:default"]


def test_odd_and_malformed_notifications_change_nothing(
    app: currant.App, db: Any, spawn_worker: Any, schema_name: str
) -> None:
    """A running job is cancelled by its ``c:<id>`` only. Queues named like cancel
    messages (their jobs notify ``r:c:<id>``, ``r:cancel:<id>``), malformed
    payloads and a cancel for an id the worker does not hold change nothing; the
    worker stays up, still runs new jobs, and a real cancel still reaches a running job."""
    worker = spawn_worker(*FAST)
    victim = app.enqueue("cooperative", ("c1",), {"until_released": True})

    def keys() -> list[str]:
        return [key for key, _, _ in ledger_rows(db, schema_name)]

    wait_for(lambda: "c1:started" in keys(), message="the victim started")
    for queue in (f"c:{victim}", f"cancel:{victim}", str(victim)):
        app.enqueue("noop", (), queue=queue)  # nobody serves these queues; only their NOTIFY matters
    values = {"victim": victim, "unknown": victim + 1_000_000}
    malformed = [template.format(**values) for template in MALFORMED_NOTIFICATIONS]
    for payload in [*malformed, *(template.format(**values) for template in IGNORED_NOTIFICATIONS)]:
        db.execute("SELECT pg_notify(%s, %s)", (app.channel, payload))
    # One listener connection gets the notifications in commit order: once the
    # last one is logged, every one before it has been dispatched.
    sentinel = "end-of-odd-notifications"
    db.execute("SELECT pg_notify(%s, %s)", (app.channel, sentinel))
    wait_for(
        lambda: f"ignoring malformed notification {sentinel!r}" in worker.log(),
        timeout=10,
        message="the listener reached the last notification",
    )
    log = worker.log()
    for payload in malformed:
        assert f"ignoring malformed notification {payload!r}" in log, payload
    # The victim looks at its cancel flag once more after it sees the release:
    # a flag set by any notification above cannot go unnoticed.
    db.execute(f'INSERT INTO "{schema_name}".ledger (key) VALUES (%s)', ("c1:release",))
    wait_for(
        lambda: app.get_job(victim).state != "running",
        timeout=10,  # type: ignore[union-attr]
        message="the victim finished",
    )
    assert app.get_job(victim).state == "succeeded", keys()  # type: ignore[union-attr]
    assert "c1:released" in keys() and "c1:saw-cancel" not in keys(), keys()
    # Still working: a new job runs, and a real cancel reaches a running job.
    after = app.enqueue("record", ("after",))
    second = app.enqueue("cooperative", ("c2",))
    wait_for(
        lambda: app.get_job(after).state == "succeeded",
        timeout=10,  # type: ignore[union-attr]
        message="a job enqueued after the notifications ran",
    )
    wait_for(lambda: "c2:started" in keys(), timeout=10, message="the second cooperative job started")
    assert app.cancel(second) == "cancel_requested"
    wait_for(
        lambda: app.get_job(second).state == "cancelled",
        timeout=10,  # type: ignore[union-attr]
        message="the real cancel took effect",
    )
    assert "c2:saw-cancel" in keys()
    assert worker.popen.poll() is None, worker.log()[-3000:]
    assert "Traceback" not in worker.log(), worker.log()[-3000:]


def test_a_queue_name_with_an_at_sign_and_digits_is_woken_by_notify(
    app: currant.App, db: Any, spawn_worker: Any, schema_name: str
) -> None:
    queue = "reports@2026"
    spawn_worker("--queues", queue, "--poll-interval", "5", "--heartbeat", "5", "--dead-after", "30")
    wait_listening(db, app.channel)
    latencies = []
    for i in range(4):
        job_id = app.enqueue("record", (f"r{i}",), queue=queue)
        wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=20)  # type: ignore[union-attr]
        latencies.append(
            db.execute(
                f'SELECT extract(epoch FROM started_at - enqueued_at) FROM "{schema_name}".jobs WHERE id = %s',
                (job_id,),
            ).fetchone()[0]
        )
    assert max(latencies) < 1.0, latencies  # a 5 s poll would be needed without the notification
