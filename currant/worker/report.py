"""What a worker tells about the jobs it ran: a line per failed attempt, the
traceback of a final failure, and the counts of its exit summary.

Attempts are reported once the database has recorded them, because only the
database knows whether a failed attempt is retried (the job's own
``max_attempts`` wins over the task's) and when it runs next.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .outcomes import Outcome

log = logging.getLogger("currant.worker")

# What a recorded attempt became, by the state the database gave the job.
OUTCOME_OF_STATE = {"succeeded": "succeeded", "retrying": "retried", "failed": "failed", "cancelled": "cancelled"}


class Tally:
    """Counts of recorded attempts: by outcome for the exit summary, and by
    (queue, task, outcome) for the activity each heartbeat reports."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.by_job: Counter[tuple[str, str, str]] = Counter()  # since start: (queue, task, outcome) -> attempts
        self.unreported: Counter[tuple[str, str, str]] = Counter()  # since the last heartbeat took them

    def add(self, outcome: str, n: int = 1, queue: str | None = None, task: str | None = None) -> None:
        self.counts[outcome] += n
        if queue is not None and task is not None:
            self.by_job[queue, task, outcome] += n
            self.unreported[queue, task, outcome] += n

    def count(self, outcome: str, n: int, queue: str, task: str) -> None:
        """Count without reporting: what the database already recorded as activity."""
        self.counts[outcome] += n
        self.by_job[queue, task, outcome] += n

    def take_unreported(self) -> dict[str, list[Any]]:
        """The activity since the last report, as the maintain statement takes it."""
        taken, self.unreported = self.unreported, Counter()
        keys = list(taken)
        return {
            "done_queues": [q for q, _t, _o in keys],
            "done_tasks": [t for _q, t, _o in keys],
            "done_outcomes": [o for _q, _t, o in keys],
            "done_counts": [taken[k] for k in keys],
        }

    def give_back(self, report: dict[str, list[Any]]) -> None:
        """A report the database did not take: it goes with the next one."""
        columns = (report["done_queues"], report["done_tasks"], report["done_outcomes"], report["done_counts"])
        for queue, task, outcome, n in zip(*columns, strict=True):
            self.unreported[queue, task, outcome] += n

    def summary(self) -> str:
        parts = [f"{self.counts[name]} {name}" for name in ("succeeded", "failed", "retried", "cancelled")]
        if self.counts["rescued"]:
            parts.append(f"{self.counts['rescued']} rescued from dead workers")
        if self.counts["fenced"]:
            parts.append(f"{self.counts['fenced']} not recorded (lease lost)")
        return ", ".join(parts)


def recorded(rows: Iterable[tuple[Any, ...]], outcomes: Mapping[int, Outcome], db_now: float, tally: Tally) -> None:
    """Log and count the rows ``complete_outcomes`` returned:
    (id, state, queue, run_at, attempts, max_attempts, task)."""
    for job_id, state, queue, run_at, attempts, max_attempts, task_name in rows:
        tally.add(OUTCOME_OF_STATE.get(state, state), queue=queue, task=task_name)
        outcome = outcomes.get(job_id)
        if outcome is None or outcome.error is None:
            continue
        task = outcome.task or "?"
        first_line = outcome.error.split("\n", 1)[0]
        if state == "retrying":
            log.warning(
                "job %s (%s) attempt %d/%d failed: %s; retrying %s",
                job_id,
                task,
                attempts,
                max_attempts,
                first_line,
                _when(run_at, db_now),
            )
        elif state == "failed":
            detail = f"\n{outcome.traceback.rstrip()}" if outcome.traceback else ""
            log.error("job %s (%s) failed for good after %d attempts: %s%s", job_id, task, attempts, first_line, detail)
        elif state == "cancelled":
            log.info("job %s (%s) cancelled", job_id, task)


def _when(run_at: datetime, db_now: float) -> str:
    delay = run_at.timestamp() - db_now
    if delay < 0.05:
        return "now"
    return f"in {delay:.1f} s (at {run_at.astimezone(timezone.utc):%H:%M:%S} UTC)"
