"""Currant against its peers, on this machine, in one command.

    python benchmarks/peers/run.py [--quick] [--runs 3] [--out benchmarks/peers/results]

Run it with the Python that has Currant (its dev venv, built in place), e.g.
``/tmp/venv/bin/python benchmarks/peers/run.py``; that interpreter runs Currant
and the raw-SQL floor. Celery, RQ, Dramatiq, pgqueuer and procrastinate run
from their own virtualenv (``benchmarks/peers/.venv-peers``), which this
command creates from ``requirements.txt`` (pinned) when it is missing or
stale. It needs PostgreSQL (``--pg-dsn``; an embedded one is started if it
does not answer) and Redis (``--redis-url``; ``redis-server`` is started if it
does not answer). The Redis database in ``--redis-url`` (default 9) is
FLUSHed between runs: do not point it at data you keep.

This file is stdlib only: it orchestrates, each measurement runs in
``driver.py`` under the right interpreter, and ``report.py`` (peers venv, for
matplotlib) writes ``results.md`` and ``results.png`` from ``results.json``.
See README.md beside it for what is measured and how.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.peers.ledger import Resp

PEERS = ["celery", "rq", "dramatiq", "pgqueuer", "procrastinate"]
FLOORS = ("floor", "floor_guarded")  # psycopg alone; see benchmarks/floor.py
VENV = HERE / ".venv-peers"
REQUIREMENTS = HERE / "requirements.txt"
IMPORT_CHECK = "import celery, rq, dramatiq, pgqueuer, procrastinate, asyncpg, psycopg, redis, matplotlib"


def log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- environment -------------------------------------------------------------------------------


def ensure_peers_venv(venv: Path) -> Path:
    """The peers' virtualenv, (re)built when missing, broken, or its pins changed."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        check = subprocess.run([str(python), "-c", IMPORT_CHECK], capture_output=True, check=False)
        if check.returncode == 0:
            return python
        log("peers venv is broken; rebuilding it")
    log(f"creating the peers virtualenv {venv} from {REQUIREMENTS.name} (a minute or two)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)], check=True
    )
    subprocess.run([str(python), "-c", IMPORT_CHECK], check=True)
    stamp.write_text(want)
    return python


def redis_answers(url: str) -> bool:
    try:
        conn = Resp(url)
        ok = conn.call("PING") == "PONG"
        conn.close()
        return ok
    except (OSError, RuntimeError):
        return False


def ensure_redis(url: str) -> None:
    if redis_answers(url):
        return
    log("Redis does not answer: starting redis-server (no persistence) on port 6379")
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--port", "6379", "--save", "", "--appendonly", "no"], check=True
    )
    deadline = time.monotonic() + 20
    while not redis_answers(url):
        if time.monotonic() > deadline:
            raise SystemExit(f"Redis at {url} still does not answer after starting redis-server")
        time.sleep(0.2)


def start_pg(currant_python: str, dsn: str) -> tuple[str, subprocess.Popen[str]]:
    """A DSN that answers; the helper process holds an embedded server if it had to start one."""
    proc = subprocess.Popen(
        [currant_python, "-m", "benchmarks.peers.services", "pg", "--dsn", dsn],
        cwd=REPO,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        raise SystemExit("could not reach or start PostgreSQL")
    return line, proc


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# -- measurements --------------------------------------------------------------------------------


class Harness:
    def __init__(self, args: argparse.Namespace, pythons: dict[str, str], config: dict[str, Any]) -> None:
        self.args = args
        self.pythons = pythons
        self.config = config
        self.logdir = args.out / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)

    def python_for(self, system: str) -> str:
        return self.pythons["currant"] if system in ("currant", *FLOORS) else self.pythons["peers"]

    def drive(self, system: str, workload: str, tag: str, *extra: str) -> dict[str, Any]:
        cmd = [
            self.python_for(system),
            "-m",
            "benchmarks.peers.driver",
            system,
            workload,
            "--config",
            json.dumps(self.config),
            "--logdir",
            str(self.logdir),
            "--tag",
            tag,
            *extra,
        ]
        proc = subprocess.run(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, text=True, check=False)
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {
                "ok": False,
                "problems": [f"driver exited {proc.returncode} without a result"],
                "metrics": {},
                "details": {},
            }

    def version(self, system: str) -> str:
        return str(self.drive(system, "version", "version").get("version", "?"))


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, min, max of each metric over the runs that passed their checks."""
    good = [r for r in runs if r["ok"]]
    keys = sorted({k for r in good for k in r["metrics"]})
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = [r["metrics"][key] for r in good if key in r["metrics"]]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 run, small N, short sustained levels (a smoke test)")
    parser.add_argument("--runs", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="output directory")
    parser.add_argument("--systems", default="currant,floor,floor_guarded," + ",".join(PEERS), help="comma list to run")
    parser.add_argument("--peer-jobs", type=int, help="N for peers' drain (default 20000; 2000 with --quick)")
    parser.add_argument(
        "--currant-jobs", type=int, help="N for Currant and the floor (default 200000; 20000 with --quick)"
    )
    parser.add_argument(
        "--pickup-jobs", type=int, help="single jobs at 50/s for idle pickup (default 200; 50 with --quick)"
    )
    parser.add_argument(
        "--sustained-systems",
        default="currant," + ",".join(PEERS),
        help="who gets workload 2 (default: every queue; '' for none)",
    )
    parser.add_argument("--sustained-rates", default="100,1000,10000")
    parser.add_argument("--sustained-seconds", type=float, help="seconds per offered rate (default 5; 2 with --quick)")
    parser.add_argument(
        "--no-scale",
        action="store_true",
        help="skip workload 4, Currant's scale cases (benchmarks/scale.py: backlog size, worker"
        " processes, payload size, CPU per 1,000 jobs, idle statements/s)",
    )
    parser.add_argument(
        "--pg-dsn", default=os.environ.get("CURRANT_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="its database is FLUSHed")
    parser.add_argument(
        "--currant-python",
        default=os.environ.get("CURRANT_PYTHON", sys.executable),
        help="interpreter with Currant importable from the checkout (default: this one)",
    )
    parser.add_argument("--venv", type=Path, default=VENV, help="the peers' virtualenv (created if missing)")
    # Worker configuration: each peer's documented recommendation for light jobs (README.md says why).
    parser.add_argument("--currant-concurrency", type=int, default=4, help="Currant worker --concurrency (its default)")
    parser.add_argument("--celery-concurrency", type=int, default=os.cpu_count() or 2, help="prefork children")
    parser.add_argument("--dramatiq-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--dramatiq-threads", type=int, default=8)
    parser.add_argument("--pgqueuer-batch", type=int, default=10, help="pgqueuer batch_size (its default)")
    parser.add_argument("--procrastinate-concurrency", type=int, default=10)
    parser.add_argument(
        "--rq-worker-class",
        default="rq.worker.SimpleWorker",
        help="rq.worker.Worker forks per job (~50 jobs/s here); see README.md",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (1 if quick else 3)
    args.peer_jobs = args.peer_jobs or (2_000 if quick else 20_000)
    args.currant_jobs = args.currant_jobs or (20_000 if quick else 200_000)
    args.pickup_jobs = args.pickup_jobs or (50 if quick else 200)
    args.sustained_seconds = args.sustained_seconds or (2.0 if quick else 5.0)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    systems = [s for s in args.systems.split(",") if s]
    sustained_systems = [s for s in args.sustained_systems.split(",") if s and s in systems]

    check = subprocess.run(
        [args.currant_python, "-c", "import currant, psycopg"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise SystemExit(
            f"{args.currant_python} cannot import currant from {REPO} (build the extension first:"
            f" python setup.py build_ext --inplace):\n{check.stderr.strip()[-800:]}"
        )
    peers_python = str(ensure_peers_venv(args.venv))
    ensure_redis(args.redis_url)
    pg_dsn, pg_proc = start_pg(args.currant_python, args.pg_dsn)
    try:
        config = {
            "pg_dsn": pg_dsn,
            "redis_url": args.redis_url,
            "currant_concurrency": args.currant_concurrency,
            "celery_concurrency": args.celery_concurrency,
            "dramatiq_processes": args.dramatiq_processes,
            "dramatiq_threads": args.dramatiq_threads,
            "pgqueuer_batch": args.pgqueuer_batch,
            "procrastinate_concurrency": args.procrastinate_concurrency,
            "rq_worker_class": args.rq_worker_class,
        }
        harness = Harness(args, {"currant": args.currant_python, "peers": peers_python}, config)
        return bench(harness, args, systems, sustained_systems, peers_python, pg_dsn)
    finally:
        if pg_proc.stdin:
            pg_proc.stdin.close()
        pg_proc.wait(timeout=60)


def bench(
    harness: Harness,
    args: argparse.Namespace,
    systems: list[str],
    sustained_systems: list[str],
    peers_python: str,
    pg_dsn: str,
) -> int:
    info = subprocess.run(
        [peers_python, "-m", "benchmarks.peers.services", "info", "--dsn", pg_dsn, "--redis-url", args.redis_url],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    machine = json.loads(info.stdout)
    versions = {s: harness.version(s) for s in systems}
    log(f"machine: {machine['nproc']} x {machine['cpu']}; PostgreSQL {machine['postgres']}; Redis {machine['redis']}")
    for s, v in versions.items():
        log(f"  {s}: {v}")

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {"drain": [], "pickup": [], "sustained": []} for s in systems
    }
    started = time.monotonic()
    for run in range(1, args.runs + 1):
        # Systems interleaved within a run, so a noisy minute hits everyone, not one system's three runs.
        for system in systems:
            n = args.currant_jobs if system in ("currant", *FLOORS) else args.peer_jobs
            log(f"run {run}/{args.runs}: {system} drain, N = {n:,}")
            timeout = max(300.0, n / 50)
            res = harness.drive(system, "drain", f"{system}-r{run}", "--jobs", str(n), "--timeout", str(timeout))
            res["jobs"] = n
            runs[system]["drain"].append(res)
            m = res["metrics"]
            log(
                f"run {run}: {system}: "
                + ("ok" if res["ok"] else "FAILED " + "; ".join(res["problems"])[:300])
                + f"; enqueue {m.get('enqueue_jobs_per_s', 0):,.0f}/s, drain {m.get('drain_jobs_per_s', 0):,.0f}/s,"
                f" e2e {m.get('e2e_jobs_per_s', 0):,.0f}/s"
            )
        for system in systems:
            if system in FLOORS:
                continue
            log(f"run {run}/{args.runs}: {system} idle pickup")
            res = harness.drive(system, "pickup", f"{system}-r{run}", "--jobs", str(args.pickup_jobs), "--rate", "50")
            runs[system]["pickup"].append(res)
            m = res["metrics"]
            log(
                f"run {run}: {system}: pickup p50 {m.get('pickup_p50_ms', float('nan')):.1f} ms,"
                f" p99 {m.get('pickup_p99_ms', float('nan')):.1f} ms" + ("" if res["ok"] else " FAILED")
            )
        for system in sustained_systems:
            log(f"run {run}/{args.runs}: {system} sustained")
            res = harness.drive(
                system,
                "sustained",
                f"{system}-r{run}",
                "--rates",
                args.sustained_rates,
                "--seconds",
                str(args.sustained_seconds),
            )
            runs[system]["sustained"].append(res)
    scale = None if args.no_scale or "currant" not in systems else run_scale(args, pg_dsn)
    log(f"measurements took {time.monotonic() - started:.0f} s")

    summary = {s: {w: summarise(rs) for w, rs in by_w.items() if rs} for s, by_w in runs.items()}
    payload = {
        "command": " ".join(["python", "benchmarks/peers/run.py", *(sys.argv[1:])]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "config": harness.config | {"pg_dsn": "(local)"},
        "machine": machine,
        "versions": versions,
        "runs": runs,
        "summary": summary,
        "scale": scale,
    }
    out_json = args.out / "results.json"
    out_json.write_text(json.dumps(payload, indent=2, default=str))
    log(f"wrote {out_json}")
    subprocess.run(
        [peers_python, "-m", "benchmarks.peers.report", str(out_json)], cwd=REPO, env=child_env(), check=True
    )
    sys.stdout.write((args.out / "results.md").read_text())
    failed = [(s, w) for s, by_w in runs.items() for w, rs in by_w.items() for r in rs if not r["ok"]]
    return 1 if failed or (scale is not None and not scale["ok"]) else 0


def run_scale(args: argparse.Namespace, pg_dsn: str) -> dict[str, Any]:
    """Workload 4, Currant alone: benchmarks/scale.py with this run's repetitions; its summary for the report."""
    out = args.out / "scale.json"
    command = [
        args.currant_python,
        "benchmarks/scale.py",
        "--dsn",
        pg_dsn,
        "--runs",
        str(args.runs),
        "--json",
        str(out),
        *(["--quick"] if args.quick else []),
    ]
    shown = " ".join(["python", *command[1:]]).replace(pg_dsn, "DSN")
    out.unlink(missing_ok=True)  # never report an earlier run's numbers
    log(f"workload 4 (scale): {shown}")
    # Its progress goes to stderr like ours; its table to our stderr too, so stdout stays the markdown.
    done = subprocess.run(command, cwd=REPO, env=child_env(), stdout=sys.stderr, check=False)
    summary = json.loads(out.read_text())["summary"] if out.exists() else {}
    return {"command": shown, "ok": done.returncode == 0, "summary": summary}


if __name__ == "__main__":
    sys.exit(main())
