"""Figure 1, submission: POST /jobs req/s and p50/p99 latency with wrk, against the baseline app.

Per repetition, wrk (1 thread, 16 connections, 10 s) posts `{"command": "true"}` to the
project's web (`jobrunner web`, WEB_CONCURRENCY as chosen, no worker running) and to the
baseline app (shared/baselines/jobs_app.py, 1 uvicorn worker), in alternating order, each on
an emptied table and Redis queue. The ratio project/baseline is taken within the repetition.

    .venv/bin/python -m bench.submit [--duration 10] [--connections 16] [--web-concurrency N]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench import procs
from bench.baseline import Baseline
from bench.common import Result, log, standalone
from bench.loadgen import WrkResult, run_wrk
from bench.profiler import FORMATS, Profiler, note_for, summarise
from bench.stack import BenchConfig, Role, Stack, maybe_stack
from bench.stats import Table, cell
from service.config import Settings


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("submission")
    group.add_argument("--duration", type=float, default=None, help="seconds per wrk run (10)")
    group.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    group.add_argument("--warmup", type=float, default=None, help="unmeasured wrk seconds (2)")
    add_profile_args(group)


def add_profile_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--profile",
        metavar="DIR",
        help="after the measured reps, profile the roles with py-spy in one more run",
    )
    group.add_argument("--profile-format", choices=FORMATS, default="raw")
    group.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s (100)")
    group.add_argument(
        "--profile-wall",
        action="store_true",
        help="sample every thread, waiting ones too (default: only threads holding the GIL, "
        "i.e. Python on the CPU)",
    )


def _server_cpu() -> dict[str, float]:
    """CPU seconds so far of the shared servers (read-only, for a CPU-per-request split)."""
    return {
        "mariadbd": procs.cpu_seconds(procs.pids_named("mariadbd")),
        "redis": procs.cpu_seconds(procs.pids_named("redis-server")),
    }


def measure(
    role: Role, duration: float, connections: int, token: str
) -> tuple[WrkResult, dict[str, float]]:
    """One wrk run against `role`; also the CPU ms per request of it and of the servers."""
    pids = procs.tree(role.pid)
    cpu0, servers0 = procs.cpu_seconds(pids), _server_cpu()
    result = run_wrk(
        f"{role.url}/jobs",
        "post_jobs.lua",
        duration=duration,
        connections=connections,
        token=token,
    )
    cpu1, servers1 = procs.cpu_seconds(procs.tree(role.pid)), _server_cpu()
    per = max(result.requests, 1)
    cpu = {"web": (cpu1 - cpu0) * 1000 / per}
    cpu.update({k: (servers1[k] - servers0[k]) * 1000 / per for k in servers0})
    return result, cpu


def run(config: BenchConfig, args: argparse.Namespace, stack: Stack | None = None) -> Result:
    duration = args.duration or (1.0 if config.smoke else 10.0)
    warmup = args.warmup if args.warmup is not None else (0.0 if config.smoke else 2.0)
    token = config.token
    reps: list[dict[str, Any]] = []
    result = Result()
    with maybe_stack(config, stack) as st:
        st.stop_worker()  # figure 1 is the web alone: no job runs while it is measured
        web = st.web or st.start_web()
        baseline = Baseline(st)
        base_role = baseline.start()
        try:
            targets = {"project": web, "baseline": base_role}
            if warmup:
                for role in targets.values():
                    run_wrk(
                        f"{role.url}/jobs",
                        "post_jobs.lua",
                        duration=warmup,
                        connections=args.connections,
                        token=token,
                    )
            for rep in range(config.reps):
                names = ["project", "baseline"] if rep % 2 == 0 else ["baseline", "project"]
                row: dict[str, Any] = {}
                for name in names:
                    st.reset()
                    baseline.reset()
                    log(f"submit rep {rep + 1}/{config.reps}: {name}, {duration:g} s")
                    wrk, cpu = measure(targets[name], duration, args.connections, token)
                    row[name] = {"wrk": wrk, "cpu": cpu}
                row["project_rows"] = st.query("SELECT COUNT(*) FROM jobs")[0][0]
                reps.append(row)
            if args.profile:
                result.tables.extend(_profile(st, web, args, duration, token))
        finally:
            baseline.stop()
            st.reset()
    result.tables[:0] = _tables(config, args, reps, duration)
    result.raw["submit"] = [
        {
            k: (v if not isinstance(v, dict) else {**v, "wrk": v["wrk"].__dict__})
            for k, v in r.items()
        }
        for r in reps
    ]
    return result


def _profile(
    st: Stack, web: Role, args: argparse.Namespace, duration: float, token: str
) -> list[Table]:
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"web-submit.{'txt' if args.profile_format == 'raw' else args.profile_format}"
    st.reset()
    log(f"submit: profiling the web with py-spy for {duration:g} s (not counted)")
    with Profiler(web.pid, path, args.profile_format, args.profile_rate, not args.profile_wall):
        wrk = run_wrk(
            f"{web.url}/jobs",
            "post_jobs.lua",
            duration=duration,
            connections=args.connections,
            token=token,
        )
    mode = "all threads" if args.profile_wall else "GIL holders"
    title = f"Profile ({mode}): web during POST /jobs ({wrk.requests} requests at {wrk.rate:.0f}/s)"
    if args.profile_format != "raw":
        table = Table(title, ["file"])
        table.add(note_for(path, args.profile_format))
        return [table]
    return summarise(
        path,
        title,
        rate=args.profile_rate,
        units=wrk.requests,
        unit="request",
        wall=args.profile_wall,
    )


def _tables(
    config: BenchConfig, args: argparse.Namespace, reps: list[dict[str, Any]], duration: float
) -> list[Table]:
    concurrency = config.web_concurrency or f"default ({Settings().web_concurrency})"
    per_rep = Table(
        f"1. Submission per rep: POST /jobs, wrk -t1 -c{args.connections} -d{duration:g}s",
        [
            "rep",
            "project req/s",
            "baseline req/s",
            "ratio req/s",
            "project p50/p99 ms",
            "baseline p50/p99 ms",
            "errors p/b",
            "web CPU ms/req p/b",
        ],
    )
    for i, r in enumerate(reps, 1):
        p, b = r["project"], r["baseline"]
        pw, bw = p["wrk"], b["wrk"]
        per_rep.add(
            i,
            f"{pw.rate:.0f}",
            f"{bw.rate:.0f}",
            f"{pw.rate / bw.rate:.3f}" if bw.rate else "n/a",
            f"{pw.p50_ms:.1f} / {pw.p99_ms:.1f}",
            f"{bw.p50_ms:.1f} / {bw.p99_ms:.1f}",
            f"{pw.errors + pw.non_2xx} / {bw.errors + bw.non_2xx}",
            f"{p['cpu']['web']:.2f} / {b['cpu']['web']:.2f}",
        )
    summary = Table(
        f"1. Submission summary (WEB_CONCURRENCY={concurrency}; median [min-max] over "
        f"{len(reps)} reps)",
        ["figure", "project", "baseline", "ratio project/baseline"],
    )

    def col(name: str, attr: str) -> list[float]:
        return [getattr(r[name]["wrk"], attr) for r in reps]

    def ratio(attr: str) -> list[float]:
        return [
            getattr(r["project"]["wrk"], attr) / getattr(r["baseline"]["wrk"], attr)
            for r in reps
            if getattr(r["baseline"]["wrk"], attr)
        ]

    summary.add(
        "req/s", cell(col("project", "rate")), cell(col("baseline", "rate")), cell(ratio("rate"), 3)
    )
    summary.add(
        "p50 ms",
        cell(col("project", "p50_ms")),
        cell(col("baseline", "p50_ms")),
        cell(ratio("p50_ms"), 3),
    )
    summary.add(
        "p99 ms",
        cell(col("project", "p99_ms")),
        cell(col("baseline", "p99_ms")),
        cell(ratio("p99_ms"), 3),
    )
    for key, label in (
        ("web", "web CPU ms/req"),
        ("mariadbd", "mariadbd CPU ms/req"),
        ("redis", "redis CPU ms/req"),
    ):
        pv = [r["project"]["cpu"][key] for r in reps]
        bv = [r["baseline"]["cpu"][key] for r in reps]
        summary.add(
            label,
            cell(pv, 2),
            cell(bv, 2),
            cell([a / b for a, b in zip(pv, bv, strict=True) if b], 2),
        )
    summary.add(
        "errors (socket + non-2xx)",
        sum(r["project"]["wrk"].errors + r["project"]["wrk"].non_2xx for r in reps),
        sum(r["baseline"]["wrk"].errors + r["baseline"]["wrk"].non_2xx for r in reps),
        "",
    )
    summary.notes += [
        "no worker runs during this figure; the table and the Redis queue are emptied before "
        "each wrk run; project and baseline alternate which goes first",
        "web CPU = utime+stime of the server's process tree / requests; mariadbd and redis "
        "are shared with anything else running on the machine (noisy)",
        "the baseline runs as its README says (uvicorn CLI: uvloop + httptools, access log "
        "on); the project runs `jobrunner web` (uvloop + httptools, its request log on)",
    ]
    return [per_rep, summary]


def main() -> None:
    standalone(__doc__.splitlines()[0], add_args, run)


if __name__ == "__main__":
    main()
