"""The worker's histogram buckets (no database): a batch counts as its values one by one."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from currant.job import JobContext
from currant.worker.metrics import DURATION_BUCKETS, WAIT_BUCKETS, Buckets, WorkerMetrics

values = st.lists(st.floats(min_value=-10.0, max_value=1e4, allow_nan=False), max_size=300)


@given(values)
def test_add_many_counts_as_add_does(batch: list[float]) -> None:
    one_by_one, at_once = Buckets(DURATION_BUCKETS), Buckets(DURATION_BUCKETS)
    for value in batch:
        one_by_one.add(max(0.0, value))  # negatives count as 0 (a wait on a skewed clock)
    at_once.add_many(list(batch))
    assert at_once.counts == one_by_one.counts
    assert math.isclose(at_once.total, one_by_one.total, rel_tol=1e-9, abs_tol=1e-9)


def test_a_batch_of_mixed_tasks_and_queues_lands_in_each_ones_histograms() -> None:
    metrics = WorkerMetrics()

    def job(queue: str, task: str, waited: float) -> JobContext:
        return JobContext(1, 1, task, queue, None, waited)

    metrics.after_batch([(job("a", "t", 0.002), 0.003), (job("b", "t", -1.0), 20.0), (job("a", "u", 7.0), 0.0)])
    metrics.after_batch([(job("a", "t", 0.0005), 400.0)])
    durations, waits = metrics.durations, metrics.waits
    assert set(durations) == {("a", "t"), ("b", "t"), ("a", "u")} and set(waits) == {"a", "b"}
    assert sum(durations["a", "t"].counts) == 2 and durations["a", "t"].counts[-1] == 1  # 400 s: above every bound
    assert durations["a", "t"].counts[DURATION_BUCKETS.index(0.005)] == 1
    assert waits["b"].counts[0] == 1 and waits["b"].total == 0.0  # a negative wait counts as 0
    assert [waits["a"].counts[WAIT_BUCKETS.index(bound)] for bound in (0.001, 0.0025, 10.0)] == [1, 1, 1]
    assert math.isclose(waits["a"].total, 7.0025)
