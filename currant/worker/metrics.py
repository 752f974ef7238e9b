"""Prometheus metrics of a worker process (``--metrics-port``), kept off the hot path.

Most numbers are read when Prometheus scrapes, from what the worker keeps
anyway: the tally of recorded outcomes, the lanes, the links. The histograms
of handler time and wait are filled by a batch hook (``after_batch``, see
:mod:`currant.hooks`): per job a lane only appends (job, handler time), and
the buckets are counted per completion batch, on the event loop, with a
sort and a bisect per bound (C-level work, not a loop per job). As a
per-job hook (``after_job`` on the lane) metrics cost 3.5 us per job against
1.4 us without (a JobOutcome per job, the dispatch), and 14 us with a lock
shared by the lanes (each lane handed the GIL to one that then waited for it).
Per claim and per flush one observation each. With metrics off none of
this runs.

The numbers are exposed through prometheus_client's collector API and its
HTTP server; with ``--processes N`` the supervisor sums its children's
(:mod:`currant.worker.metrics_supervisor`).
"""

from __future__ import annotations

import bisect
import math
import operator
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..job import JobContext

if TYPE_CHECKING:
    from .lanes import Lanes
    from .links import Link
    from .state import WorkerState

# Handler time: from a millisecond to a long batch job.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Wait from run_at to the claim: the latency users feel, from a ms to an hour of backlog.
WAIT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
_Key = TypeVar("_Key")

BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


_JOB, _DURATION = operator.itemgetter(0), operator.itemgetter(1)
_QUEUE_AND_TASK = operator.attrgetter("queue", "task")
_QUEUE, _WAITED = operator.attrgetter("queue"), operator.attrgetter("waited")


def _grouped(keys: list[_Key], values: list[float]) -> dict[_Key, list[float]]:
    """The values by key (keys[i] is the key of values[i])."""
    if not keys:
        return {}
    if len(set(keys)) == 1:
        return {keys[0]: values}
    groups: dict[_Key, list[float]] = {}
    for key, value in zip(keys, values, strict=True):
        groups.setdefault(key, []).append(value)
    return groups


class Buckets:
    """A histogram's counts, cheap to add to from any thread."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def copy(self) -> Buckets:
        twin = Buckets(self.bounds)
        twin.counts = list(self.counts)
        twin.total = self.total
        return twin

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_many(self, values: list[float]) -> None:
        """``add`` each of ``values`` (sorted in place), negatives counted as 0:
        a sort and a bisect per bound, C-level work, not a bisect per value."""
        values.sort()
        counts, below = self.counts, 0
        for i, bound in enumerate(self.bounds):
            upto = bisect.bisect_right(values, bound)  # the values <= bound: bucket i's and those before
            counts[i] += upto - below
            below = upto
        counts[-1] += len(values) - below
        self.total += math.fsum(values[bisect.bisect_left(values, 0.0) :])

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


class WorkerMetrics:
    """The hook and the collector of one worker's metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # folding (the loop) against reading (a scrape's thread)
        self._durations: dict[tuple[str, str], Buckets] = {}
        self._waits: dict[str, Buckets] = {}
        self.claim_sizes = Buckets(BATCH_BUCKETS)
        self.flushes = Buckets(FLUSH_BUCKETS)
        self.claims = 0
        self.state: WorkerState | None = None
        self.lanes: Lanes | None = None
        self.links: Sequence[Link] = ()

    def attach(self, state: WorkerState, lanes: Lanes, links: Sequence[Link]) -> None:
        self.state, self.lanes, self.links = state, lanes, links

    # -- fed by the worker ----------------------------------------------------------

    def after_batch(self, attempts: Sequence[tuple[JobContext, float]]) -> None:
        """A hook method (currant.hooks): the handler times and waits of a batch
        of attempts, on the loop, into the histograms."""
        # Per job only C-level steps (map, sort, bisect): one batch is usually one task of one queue.
        jobs = list(map(_JOB, attempts))
        by_task = _grouped(list(map(_QUEUE_AND_TASK, jobs)), list(map(_DURATION, attempts)))
        by_queue = _grouped(list(map(_QUEUE, jobs)), list(map(_WAITED, jobs)))
        with self._lock:
            for key, values in by_task.items():
                buckets = self._durations.get(key)
                if buckets is None:
                    buckets = self._durations[key] = Buckets(DURATION_BUCKETS)
                buckets.add_many(values)
            for queue, values in by_queue.items():
                buckets = self._waits.get(queue)
                if buckets is None:
                    buckets = self._waits[queue] = Buckets(WAIT_BUCKETS)
                buckets.add_many(values)

    @property
    def durations(self) -> dict[tuple[str, str], Buckets]:
        """Handler times by (queue, task), as of now (a copy)."""
        with self._lock:
            return {key: buckets.copy() for key, buckets in self._durations.items()}

    @property
    def waits(self) -> dict[str, Buckets]:
        """Waits by queue, as of now (a copy)."""
        with self._lock:
            return {key: buckets.copy() for key, buckets in self._waits.items()}

    def claimed(self, batch: int) -> None:  # the claimer, on the loop
        self.claims += 1
        self.claim_sizes.add(batch)

    def flushed(self, seconds: float) -> None:  # the completer, on the loop
        self.flushes.add(seconds)

    # -- read by Prometheus (prometheus_client's collector protocol) ------------------

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        finished = CounterMetricFamily(
            "currant_jobs_finished",
            "Attempts recorded, by outcome (rescued: taken back from a dead worker).",
            labels=["queue", "task", "outcome"],
        )
        if self.state is not None:
            for (queue, task, outcome), n in sorted(self.state.tally.by_job.items()):
                finished.add_metric([queue, task, outcome], n)
        yield finished
        duration = HistogramMetricFamily(
            "currant_job_duration_seconds", "Handler time per attempt.", labels=["queue", "task"]
        )
        wait = HistogramMetricFamily(
            "currant_job_wait_seconds", "From a job's run_at (or enqueue) to its claim.", labels=["queue"]
        )
        for (queue, task), buckets in sorted(self.durations.items()):
            duration.add_metric([queue, task], buckets.cumulative(), buckets.total)
        for queue, buckets in sorted(self.waits.items()):
            wait.add_metric([queue], buckets.cumulative(), buckets.total)
        yield duration
        yield wait
        yield CounterMetricFamily("currant_claims", "Claim statements that found jobs.", value=self.claims)
        # The thundering-herd gauge: claims that found nothing (woken for a
        # job another process took, or the fallback poll of an idle worker).
        empty = self.state.empty_claims if self.state is not None else 0
        yield CounterMetricFamily("currant_empty_claims", "Claim statements that found nothing.", value=empty)
        batch = HistogramMetricFamily("currant_claim_batch_size", "Jobs per claim that found any.")
        batch.add_metric([], self.claim_sizes.cumulative(), self.claim_sizes.total)
        yield batch
        flush = HistogramMetricFamily("currant_completion_flush_seconds", "Time to record a batch of outcomes.")
        flush.add_metric([], self.flushes.cumulative(), self.flushes.total)
        yield flush
        running = len(self.lanes.active) if self.lanes is not None else 0
        prefetched = self.lanes.local.qsize() if self.lanes is not None else 0
        yield GaugeMetricFamily("currant_worker_running_jobs", "Jobs running now.", value=running)
        yield GaugeMetricFamily("currant_worker_prefetched_jobs", "Claimed jobs waiting for a lane.", value=prefetched)
        reconnects = CounterMetricFamily(
            "currant_db_reconnects", "Connections re-established after a loss.", labels=["connection"]
        )
        for link in self.links:
            reconnects.add_metric([link.role], link.reconnects)
        yield reconnects


def serve(metrics: WorkerMetrics, port: int, host: str = "0.0.0.0") -> int:
    """Serve /metrics on ``port`` (0: any free one); returns the port."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(metrics)  # a collector by protocol: it has collect()
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
