"""``--processes N --metrics-port P``: one /metrics for the host, the sum of the children's.

Each child serves its own metrics on a free port of the loopback interface
and writes the port into a file of a directory the supervisor gives it
(``CURRANT_METRICS_PORT_FILE``). When Prometheus scrapes the supervisor, it
fetches every child's metrics, parses them with prometheus_client's parser and
adds them up sample by sample: counters, histogram buckets and gauges
(running and prefetched jobs) all sum across processes. A child that is
restarting at that moment is missing from one scrape; its counters start over
with it, as a restarted process's do.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("currant.supervisor")

# Where a child writes the port of its metrics.
PORT_FILE_ENV = "CURRANT_METRICS_PORT_FILE"

CHILD_SCRAPE_TIMEOUT = 2.0


class ChildrenCollector:
    def __init__(self, port_dir: Path) -> None:
        self.port_dir = port_dir

    def child_ports(self) -> list[int]:
        ports = []
        for file in sorted(self.port_dir.glob("*.port")):
            try:
                ports.append(int(file.read_text().strip()))
            except (OSError, ValueError):
                continue  # being written
        return ports

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, Metric
        from prometheus_client.parser import text_string_to_metric_families

        merged: dict[str, Any] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        up = 0
        for port in self.child_ports():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=CHILD_SCRAPE_TIMEOUT) as reply:
                    text = reply.read().decode()
            except OSError:
                continue  # a child between lives
            up += 1
            for family in text_string_to_metric_families(text):
                if family.name not in merged:
                    merged[family.name] = Metric(family.name, family.documentation, family.type)
                    sums[family.name] = {}
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue  # a process's start time: nothing to add up
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    sums[family.name][key] = sums[family.name].get(key, 0.0) + sample.value
        for name, metric in merged.items():
            for (sample_name, labels), value in sums[name].items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric
        yield GaugeMetricFamily("currant_worker_processes_up", "Worker processes whose metrics answered.", value=up)


def serve_children(port: int, host: str = "0.0.0.0") -> Path:
    """Serve the children's summed metrics on ``port``; returns the directory children write their ports to."""
    from prometheus_client import CollectorRegistry, start_http_server

    port_dir = Path(tempfile.mkdtemp(prefix="currant-metrics-"))
    registry = CollectorRegistry()
    registry.register(ChildrenCollector(port_dir))  # a collector by protocol: it has collect()
    start_http_server(port, addr=host, registry=registry)
    log.info("serving the worker processes' metrics on port %d", port)
    return port_dir


def announce(port: int, slot_file: str | None = None) -> None:
    """In a child: tell the supervisor where this process's metrics are."""
    target = slot_file or os.environ.get(PORT_FILE_ENV)
    if target:
        Path(target + ".tmp").write_text(str(port))
        os.replace(target + ".tmp", target)  # the supervisor never reads half a file
