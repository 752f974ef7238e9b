"""Which hooks a worker runs around its jobs (no database)."""

from __future__ import annotations

import logging

import pytest

from currant.hooks import Hooks


class Watcher:
    def __init__(self, idle: bool = False) -> None:
        self.asleep = idle

    def idle(self) -> bool:
        return self.asleep

    def before_job(self, job: object) -> None:
        pass


class Confused(Watcher):
    def idle(self) -> bool:
        raise RuntimeError("cannot tell")


class EnqueueOnly:
    def before_enqueue(self, event: object) -> None:
        pass


def test_idle_hooks_are_left_out_and_come_back_when_awake() -> None:
    hooks = Hooks()
    assert hooks.for_jobs() is None
    hooks.add(EnqueueOnly())
    assert hooks.for_jobs() is None  # nothing to run around a job
    sleepy = hooks.add(Watcher(idle=True))
    assert hooks.for_jobs() is None and hooks.watches_jobs  # registered, but idle: a job pays one branch
    awake = hooks.add(Watcher())
    view = hooks.for_jobs()
    assert view is not None and view is not hooks and view._by_method["before_job"] == [awake.before_job]
    assert view.watches_enqueue  # the enqueue hooks stay
    sleepy.asleep = False
    assert hooks.for_jobs() is hooks


def test_a_batch_hook_is_not_a_per_job_hook() -> None:
    class Batches:
        def after_batch(self, attempts: object) -> None:
            pass

    hooks = Hooks()
    hooks.add(Batches())
    assert hooks.watches_batches and not hooks.watches_jobs and hooks.for_jobs() is None


def test_a_hook_whose_idle_raises_is_taken_as_awake(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks()
    hooks.add(Confused())
    with caplog.at_level(logging.ERROR, logger="currant.hooks"):
        assert hooks.for_jobs() is hooks
    assert "taken as not idle" in caplog.text and "cannot tell" in caplog.text
