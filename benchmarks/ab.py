"""Interleaved A/B(/C...) runs of ``benchmarks/e2e.py`` across checkouts of Currant.

    python benchmarks/ab.py --dsn DSN --tree before=/path/a --tree after=/path/b \\
        [--pairs 5] [--jobs 200000] [--pickup-jobs 100] [--json results.json]

Each tree is a checkout with its own ``.venv`` (its compiled core built). The
runs go round-robin (before, after, before, after, ...) so that the machine's
drift hits every tree alike; the report gives, per metric, the median of each
tree and the ratio of medians to the first tree, plus the median of the
per-round ratios. Every run is one ``e2e.py --runs 1`` of that tree's own
code against its own fresh database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

METRICS = [
    ("enqueue_jobs_per_s", "enqueue_many jobs/s", True),
    ("drain_net_jobs_per_s", "drain jobs/s (net of start-up)", True),
    ("drain_jobs_per_s", "drain jobs/s (incl. start-up)", True),
    ("pickup_p50_ms", "idle pickup p50 ms", False),
    ("pickup_p99_ms", "idle pickup p99 ms", False),
    ("worker_startup_s", "worker start-up s", False),
]


def run_tree(path: Path, dsn: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            str(path / ".venv/bin/python"),
            "benchmarks/e2e.py",
            "--dsn",
            dsn,
            "--runs",
            "1",
            "--jobs",
            str(args.jobs),
            "--pickup-jobs",
            str(args.pickup_jobs),
            "--idle-seconds",
            "2",
            "--json",
            out.name,
        ]
        proc = subprocess.run(command, cwd=path, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"{path}: e2e failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        data = json.loads(Path(out.name).read_text())
    metrics: dict[str, float] = data["runs"][0]["metrics"]
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--pairs", type=int, default=5, help="rounds (each runs every tree once)")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--pickup-jobs", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    trees = [(label, Path(path)) for label, _, path in (item.partition("=") for item in args.tree)]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for round_ in range(args.pairs):
        order = trees if round_ % 2 == 0 else trees[::-1]  # alternate who goes first
        for label, path in order:
            print(f"round {round_ + 1}/{args.pairs}: {label}", file=sys.stderr, flush=True)
            runs[label].append(run_tree(path, args.dsn, args))
    base = trees[0][0]
    report: dict[str, Any] = {"command": " ".join(sys.argv), "rounds": args.pairs, "runs": runs, "metrics": {}}
    print(f"{'metric':32}" + "".join(f"{label:>16}" for label, _ in trees) + "   ratio to " + base)
    for key, name, _higher_is_better in METRICS:
        medians = {label: statistics.median(r[key] for r in runs[label]) for label, _ in trees}
        ratios = {
            label: statistics.median(a[key] / b[key] for a, b in zip(runs[label], runs[base], strict=True) if b[key])
            for label, _ in trees
        }
        report["metrics"][key] = {"median": medians, "median_of_round_ratios": ratios}
        cells = "".join(f"{medians[label]:>16,.2f}" for label, _ in trees)
        ratio_text = ", ".join(
            f"{label} {medians[label] / medians[base]:.3f}x (rounds {ratios[label]:.3f}x)" for label, _ in trees[1:]
        )
        print(f"{name:32}{cells}   {ratio_text}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
