"""The lanes on their own (no database): what happens around an attempt, not inside it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import currant
from currant.worker.lanes import Claimed, Lanes
from currant.worker.outcomes import RETRY


class Exploding(dict[str, Any]):
    """A task registry that fails to find one task (as a Django task module raising at import would)."""

    def get(self, name: str, default: Any = None) -> Any:
        if name == "boom":
            raise RuntimeError("the module of 'boom' raised at import")
        return super().get(name, default)


def _job(job_id: int, task: str) -> Claimed:
    return (job_id, 1, task, (), {}, None, None, "default", None, 0.0)


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)  # polling a condition set by another thread


def _lanes(tasks: dict[str, Any], concurrency: int) -> tuple[Lanes, asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    lanes = Lanes(tasks, loop, concurrency, lambda: None)
    lanes.start()
    return lanes, loop, runner


def _stop(lanes: Lanes, loop: asyncio.AbstractEventLoop, runner: threading.Thread) -> bool:
    lanes.stop()
    finished = asyncio.run_coroutine_threadsafe(lanes.join(5.0), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    runner.join()
    return finished


def test_a_job_that_cannot_be_started_is_reported_and_its_lane_lives_on() -> None:
    app = currant.App(dsn="postgresql://nobody@127.0.0.1:1/none")

    @app.task(name="ok")
    def ok() -> None:
        return None

    @app.task(name="aok")
    async def aok() -> None:
        return None

    tasks = Exploding(app.tasks)
    lanes, loop, runner = _lanes(tasks, concurrency=1)  # one slot: a leaked one would stall the rest
    for job_id, name in enumerate(["boom", "ok", "boom", "aok", "ok"], start=1):
        lanes.local.put(_job(job_id, name))
    _wait(lambda: len(lanes.outcomes) == 5)
    reported = {job_id: outcome for job_id, _attempt, outcome in lanes.outcomes}
    for job_id in (1, 3):
        assert reported[job_id] is not None and reported[job_id].kind == RETRY
        assert "raised at import" in (reported[job_id].error or "")
        assert reported[job_id].traceback
    assert reported[2] is None and reported[4] is None and reported[5] is None
    assert not lanes.active
    assert _stop(lanes, loop, runner)
