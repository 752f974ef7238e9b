"""``results.json`` -> ``results.md`` and ``results.png`` (run in the peers venv, for matplotlib).

python -m benchmarks.peers.report benchmarks/peers/results/results.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

ORDER = ["floor", "floor_guarded", "currant", "celery", "rq", "dramatiq", "pgqueuer", "procrastinate"]
LABEL = {
    "floor": "raw-SQL floor",
    "floor_guarded": "raw-SQL floor, planner-guarded",
    "currant": "Currant",
    "celery": "Celery (Redis)",
    "rq": "RQ",
    "dramatiq": "Dramatiq (Redis)",
    "pgqueuer": "pgqueuer",
    "procrastinate": "procrastinate",
}

Summary = dict[str, dict[str, float]]


def fmt(stat: dict[str, float] | None, spec: str = "{:,.0f}", runs: int | None = None) -> str:
    """median (min–max); "[n=k]" when only k of the runs reached this metric (a saturated ladder stops early)."""
    if not stat:
        return "–"
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    text = spec.format(med) if stat["n"] == 1 else f"{spec.format(med)} ({spec.format(lo)}–{spec.format(hi)})"
    if runs is not None and stat["n"] < runs:
        text += f" [n={int(stat['n'])}]"
    return text


def ratio(a: dict[str, float] | None, b: dict[str, float] | None) -> str:
    if not a or not b or not b["median"]:
        return "–"
    return f"{a['median'] / b['median']:.1f}×"


def runs_ok(runs: list[dict[str, Any]]) -> str:
    good = sum(1 for r in runs if r["ok"])
    return f"{good}/{len(runs)}" + ("" if good == len(runs) else " **FAILED runs**")


def markdown(data: dict[str, Any]) -> str:
    summary: dict[str, dict[str, Summary]] = data["summary"]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = data["runs"]
    systems = [s for s in ORDER if s in summary]
    m = data["machine"]
    a = data["args"]
    lines = [
        "# Currant vs peers: results",
        "",
        (
            f"Command: `{data['command']}` ({data['when']}). {a['runs']} run(s); median (min–max) over the runs that"
            " passed the exactly-once check."
        ),
        (
            f"Machine: {m['nproc']} × {m['cpu']}, {m['os']}, Python {m['python']}; PostgreSQL {m['postgres']}"
            f" (fsync {m['postgres_settings'].get('fsync')}, synchronous_commit {m['postgres_settings'].get('synchronous_commit')});"
            f" Redis {m['redis']} (save '{m['redis_persistence']['save']}', appendonly {m['redis_persistence']['appendonly']})."
        ),
        "Driver, workers, PostgreSQL and Redis share these cores.",
        "",
    ]

    cur = summary.get("currant", {}).get("drain", {})
    lines += [
        "## Headline: Currant's ratio to each system (same run)",
        "",
        "| vs | enqueue | drain | end to end | idle pickup p50 (lower is better: theirs / Currant's) |",
        "|---|---:|---:|---:|---:|",
    ]
    cur_pick = summary.get("currant", {}).get("pickup", {})
    for s in systems:
        if s == "currant":
            continue
        d = summary[s].get("drain", {})
        p = summary[s].get("pickup", {})
        lines.append(
            f"| {LABEL[s]} | {ratio(cur.get('enqueue_jobs_per_s'), d.get('enqueue_jobs_per_s'))}"
            f" | {ratio(cur.get('drain_jobs_per_s'), d.get('drain_jobs_per_s'))}"
            f" | {ratio(cur.get('e2e_jobs_per_s'), d.get('e2e_jobs_per_s'))}"
            f" | {ratio(p.get('pickup_p50_ms'), cur_pick.get('pickup_p50_ms'))} |"
        )
    lines += [
        "",
        (
            "A ratio above 1× means Currant is faster. The floor is psycopg alone with no queue logic, so"
            " Currant is expected below 1× against it; above 1× means the floor's own claim plan degraded at this N"
            " (see RESULTS.md). Peers drain N = "
            f"{a['peer_jobs']:,} jobs, Currant and the floor N = {a['currant_jobs']:,} (per-job rates; see README.md)."
        ),
        "",
    ]

    lines += [
        "## Workload 1: drain (jobs/s)",
        "",
        "| system | version | N | runs ok | enqueue | drain | drain after first job | end to end | worker start-up (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        d = summary[s].get("drain", {})
        n = runs[s]["drain"][0].get("jobs", "?") if runs[s]["drain"] else "?"
        lines.append(
            f"| {LABEL[s]} | {data['versions'].get(s, '?')} | {n:,} | {runs_ok(runs[s]['drain'])}"
            f" | {fmt(d.get('enqueue_jobs_per_s'))} | {fmt(d.get('drain_jobs_per_s'))}"
            f" | {fmt(d.get('drain_steady_jobs_per_s'))} | {fmt(d.get('e2e_jobs_per_s'))}"
            f" | {fmt(d.get('startup_s'), '{:.2f}')} |"
        )
    lines += [
        "",
        (
            "drain = spawn of the worker command until the ledger holds all N ids (start-up included);"
            ' "after first job" = from the first recorded job to the last. The floor has no worker process:'
            " its drain is the claim/delete loop alone."
        ),
        "",
    ]

    lines += [
        "## Workload 3: idle pickup latency (ms), single jobs at 50/s into an idle worker",
        "",
        "| system | runs ok | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        p = summary[s].get("pickup")
        if not p:
            continue
        lines.append(
            f"| {LABEL[s]} | {runs_ok(runs[s]['pickup'])} | {fmt(p.get('pickup_p50_ms'), '{:.1f}')}"
            f" | {fmt(p.get('pickup_p90_ms'), '{:.1f}')} | {fmt(p.get('pickup_p99_ms'), '{:.1f}')}"
            f" | {fmt(p.get('pickup_max_ms'), '{:.1f}')} |"
        )
    lines += [
        "",
        (
            "Latency = handler start (`time.time()` in the worker) minus the `time.time()` the producer put in"
            " the job's arguments just before the enqueue call; same machine clock."
        ),
        "",
    ]

    sustained = [s for s in systems if summary[s].get("sustained")]
    rates = [int(r) for r in str(a["sustained_rates"]).split(",")]
    lines += ["## Workload 2: sustained load (offered rate → achieved rate, enqueue-to-start latency)", ""]
    if sustained:
        lines += ["| system | offered/s | achieved/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
        for s in sustained:
            st = summary[s]["sustained"]
            for r in rates:
                if f"sustained_{r}_achieved_per_s" not in st:
                    lines.append(f"| {LABEL[s]} | {r:,} | saturated below this rate | | |")
                    break
                nruns = sum(1 for x in runs[s]["sustained"] if x["ok"])
                lines.append(
                    f"| {LABEL[s]} | {r:,} | {fmt(st[f'sustained_{r}_achieved_per_s'], runs=nruns)}"
                    f" | {fmt(st[f'sustained_{r}_p50_ms'], '{:.1f}')} | {fmt(st[f'sustained_{r}_p99_ms'], '{:.1f}')} |"
                )
        lines += [
            "",
            (
                f"Each level runs {a['sustained_seconds']:.0f} s; a level whose achieved rate is under 90 % of the"
                " offered rate is saturation and ends the ladder. The producer shares the machine, so at 10,000/s its"
                " own enqueue rate is part of the limit (see results.json: enqueue_rate_per_s)."
            ),
            (
                f"Not measured here: {', '.join(LABEL[s] for s in systems if s not in sustained and not s.startswith('floor')) or 'none'}"
                " (`--sustained-systems` adds them)."
            ),
            "",
        ]
    else:
        lines += ["TODO: not run (`--sustained-systems` was empty).", ""]

    lines += scale_section(data.get("scale"))

    failures = [(s, w, r) for s in systems for w, rs in runs[s].items() for r in rs if not r["ok"]]
    if failures:
        lines += ["## Failed runs (left out of the medians)", ""]
        for s, w, r in failures:
            lines.append(f"* {LABEL[s]} {w}: {'; '.join(r['problems'])[:400]}")
        lines.append("")
    return "\n".join(lines)


def scale_section(scale: dict[str, Any] | None) -> list[str]:
    """Workload 4 from benchmarks/scale.py's summary (Currant alone)."""
    lines = ["## Workload 4: scale (Currant alone)", ""]
    if not scale:
        return lines + ["Not run (`--no-scale`, or Currant was not among `--systems`).", ""]
    cases = {name: entry for name, entry in scale["summary"].items() if "jobs" in entry}
    lines += [
        f"`{scale['command']}`" + ("" if scale["ok"] else " **(some runs FAILED; left out of the medians)**"),
        "",
        "| case | jobs | drain jobs/s, DB clock | with start-up | worker CPU s / 1k jobs |"
        " PostgreSQL CPU s / 1k jobs | xids / job |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in cases.items():
        pg = "–" if e.get("postgres_cpu_per_1k") is None else f"{e['postgres_cpu_per_1k']:.3f}"
        lines.append(
            f"| {name} | {e['jobs']:,} | {e['jobs_per_s']:,.0f} ({e['min']:,.0f}–{e['max']:,.0f})"
            f" | {e['with_startup_per_s']:,.0f} | {e['worker_cpu_per_1k']:.3f} | {pg} | {e['xids_per_job']:.4f} |"
        )
    backlogs = sorted((e["jobs"], e["jobs_per_s"]) for name, e in cases.items() if name.startswith("backlog"))
    notes = []
    if len(backlogs) >= 2:
        (small, small_rate), (big, big_rate) = backlogs[0], backlogs[-1]
        notes.append(
            f"{big:,} queued vs {small:,} queued: {big_rate / small_rate:.2f}× (ratio of the medians; the"
            " PostgreSQL CPU sampler costs the long drain about 12 % on 2 cores, so `benchmarks/scale.py"
            " --cases backlog --no-cpu` is the fairer throughput ratio, see BENCHMARKS.md)."
        )
    idle = scale["summary"].get("idle worker")
    if idle:
        notes.append(
            f"Idle worker (default options, empty queue): {idle['statements_per_s']:.2f} statements/s"
            f" ({idle['min']:.2f}–{idle['max']:.2f})."
        )
    return lines + ["", *notes, ""]


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = data["summary"]
    systems = [s for s in ORDER if s in summary]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(20, 5.5))

    metrics = [("enqueue_jobs_per_s", "enqueue"), ("drain_jobs_per_s", "drain"), ("e2e_jobs_per_s", "end to end")]
    width = 0.27
    for k, (key, label) in enumerate(metrics):
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(systems):
            stat = summary[s].get("drain", {}).get(key)
            if stat:
                xs.append(i + (k - 1) * width)
                ys.append(stat["median"])
                lo.append(stat["median"] - stat["min"])
                hi.append(stat["max"] - stat["median"])
        ax1.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label)
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(systems)), [LABEL[s] for s in systems], rotation=25, ha="right")
    ax1.set_ylabel("jobs/s (log scale; median, bars min–max)")
    ax1.set_title("Drain workload: throughput (higher is better)")
    ax1.legend()
    ax1.grid(axis="y", which="both", alpha=0.3)

    lat_systems = [s for s in systems if summary[s].get("pickup")]
    for k, (key, label) in enumerate([("pickup_p50_ms", "p50"), ("pickup_p90_ms", "p90"), ("pickup_p99_ms", "p99")]):
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(lat_systems):
            stat = summary[s]["pickup"].get(key)
            if stat and not math.isnan(stat["median"]):
                xs.append(i + (k - 1) * width)
                ys.append(stat["median"])
                lo.append(stat["median"] - stat["min"])
                hi.append(stat["max"] - stat["median"])
        ax2.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label)
    ax2.set_yscale("log")
    ax2.set_xticks(range(len(lat_systems)), [LABEL[s] for s in lat_systems], rotation=25, ha="right")
    ax2.set_ylabel("ms (log scale)")
    ax2.set_title("Idle pickup latency at 50 jobs/s (lower is better)")
    ax2.legend()
    ax2.grid(axis="y", which="both", alpha=0.3)

    # Latency against offered rate (workload 2): one p50 and one p99 curve per
    # system; a saturated level shows as a latency that leaves the chart's scale.
    for s in systems:
        levels = summary[s].get("sustained") or {}
        rates = sorted({int(key.split("_")[1]) for key in levels if key.endswith("_p99_ms")})
        if not rates:
            continue
        for pct, style in (("p50", "--"), ("p99", "-")):
            ys = [levels.get(f"sustained_{rate}_{pct}_ms", {}).get("median", math.nan) for rate in rates]
            ax3.plot(rates, ys, style, marker="o", label=f"{LABEL[s]} {pct}")
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.set_xlabel("offered jobs/s (log scale)")
    ax3.set_ylabel("enqueue-to-start latency, ms (log scale)")
    ax3.set_title("Sustained load: latency vs offered rate (lower is better)")
    ax3.legend(fontsize=8)
    ax3.grid(which="both", alpha=0.3)

    fig.suptitle(f"Currant vs peers — {data['machine']['nproc']} cores, {data['when']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    src = Path(sys.argv[1])
    data = json.loads(src.read_text())
    (src.parent / "results.md").write_text(markdown(data))
    chart(data, src.parent / "results.png")
    print(f"[peers] wrote {src.parent / 'results.md'} and {src.parent / 'results.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
