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
    """Counts of recorded attempts by outcome, for the exit summary (and metrics)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n

    def summary(self) -> str:
        parts = [f"{self.counts[name]} {name}" for name in ("succeeded", "failed", "retried", "cancelled")]
        if self.counts["fenced"]:
            parts.append(f"{self.counts['fenced']} not recorded (lease lost)")
        return ", ".join(parts)


def recorded(
    rows: Iterable[tuple[Any, ...]], outcomes: Mapping[int, Outcome], db_now: float, tally: Tally
) -> None:
    """Log and count the rows ``complete_outcomes`` returned: (id, state, queue, run_at, attempts, max_attempts)."""
    for job_id, state, _queue, run_at, attempts, max_attempts in rows:
        tally.add(OUTCOME_OF_STATE.get(state, state))
        outcome = outcomes.get(job_id)
        if outcome is None or outcome.error is None:
            continue
        task = outcome.task or "?"
        first_line = outcome.error.split("\n", 1)[0]
        if state == "retrying":
            log.warning(
                "job %s (%s) attempt %d/%d failed: %s; retrying %s",
                job_id, task, attempts, max_attempts, first_line, _when(run_at, db_now),
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
