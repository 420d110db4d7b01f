"""Figure 2, execution: trivial jobs through the whole path (claim, run, record), in jobs/s.

Per repetition: first the reference, `subprocess.run(["true"])` sequentially in this process
(the cost of a spawn on this machine); then N jobs `true`, then N jobs that append their id to
a file (`echo $JOBRUNNER_JOB_ID >> FILE`, the ground truth for "ran twice" and "lost").

The jobs are inserted straight into the database in one transaction and woken with the same
messages the web sends (see bench/seed.py): the API would need seconds of POSTs that compete
with the workers for the two cores. `--mode warm` (default) starts the worker role once and
times each drain from the first message to the last `finished_at`; `--mode cold` stops it,
enqueues, then times from the worker's launch (start-up included) to the last `finished_at`.
The worker runs with the project's default settings unless --worker-processes/--threads.

    .venv/bin/python -m bench.execute [--jobs 2000] [--mode warm|cold] [--profile DIR]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procs
from bench.common import Result, log, standalone
from bench.profiler import Profiler, note_for, summarise
from bench.seed import epoch, insert_queued, notify, wait_final
from bench.stack import BenchConfig, Stack, maybe_stack
from bench.stats import Table, cell
from bench.submit import add_profile_args

VARIANTS = ("true", "append")


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution")
    group.add_argument("--jobs", type=int, default=None, help="jobs per drain (2000; smoke 50)")
    group.add_argument("--spawns", type=int, default=None, help="reference spawns (1600)")
    group.add_argument("--mode", choices=("warm", "cold"), default="warm")
    group.add_argument("--timeout", type=float, default=None, help="max seconds per drain")
    add_profile_args(group)


def spawn_rate(count: int) -> float:
    """Sequential `subprocess.run(["true"])` per second, in this process."""
    started = time.perf_counter()
    for _ in range(count):
        subprocess.run(["true"], check=True)
    return count / (time.perf_counter() - started)


def command_for(variant: str, ids_file: Path) -> str:
    if variant == "true":
        return "true"
    return f"echo $JOBRUNNER_JOB_ID >> {ids_file}"


def drain(st: Stack, variant: str, n: int, mode: str, timeout: float, tag: str) -> dict[str, Any]:
    """Enqueue n jobs, let the worker run them all; figures and checks of that one drain."""
    ids_file = st.run_dir / f"ids-{tag}.txt"
    ids_file.touch()
    if mode == "cold":
        st.stop_worker()
    first, last = insert_queued(st, [command_for(variant, ids_file)] * n)
    worker_pids = st.worker.python_tree() if st.worker is not None else []
    cpu0 = procs.cpu_seconds(worker_pids)  # reset below in cold mode
    kids0 = procs.cpu_seconds(worker_pids, children=True)
    db0 = procs.cpu_seconds(procs.pids_named("mariadbd"))
    if mode == "cold":
        e0 = time.time()
        notify(st, "default", n)
        enqueued_s = time.time() - e0
        t0 = time.time()
        role = st.start_worker(wait=False)
        st.wait_worker_ready(role, timeout=60)
        ready_s = time.time() - t0
        cpu0 = kids0 = 0.0  # a new worker: all its CPU time (start-up included) counts
    else:
        ready_s = float("nan")
        t0 = time.time()
        notify(st, "default", n)
        enqueued_s = time.time() - t0
    done, complete = wait_final(st, first, last, timeout)
    assert st.worker is not None
    worker_pids = st.worker.python_tree()
    cpu = procs.cpu_seconds(worker_pids) - cpu0
    kids = procs.cpu_seconds(worker_pids, children=True) - kids0
    db = procs.cpu_seconds(procs.pids_named("mariadbd")) - db0
    rows = st.query(
        "SELECT MAX(finished_at), SUM(state = 'succeeded'), SUM(lease > 1), SUM(attempts > 1),"
        " COUNT(*) FROM jobs WHERE id BETWEEN %s AND %s",
        (first, last),
    )[0]
    end = epoch(rows[0]) if rows[0] is not None else time.time()
    starts = sorted(
        epoch(r[0])
        for r in st.query(
            "SELECT started_at FROM jobs WHERE id BETWEEN %s AND %s AND started_at IS NOT NULL",
            (first, last),
        )
    )
    # a job whose wake-up message was spent without a claim waits for the sweeper (~5 s)
    pause = max((b - a for a, b in itertools.pairwise(starts)), default=0.0)
    seen = Counter(int(x) for x in ids_file.read_text().split())
    out: dict[str, Any] = {
        "variant": variant,
        "jobs": n,
        "seconds": end - t0,
        "rate": n / (end - t0),
        "enqueue_s": enqueued_s,
        "ready_s": ready_s,
        "lost": n - done,
        "longest_pause_s": pause,
        "complete": complete,
        "not_succeeded": n - int(rows[1] or 0),
        "claimed_twice": int(rows[2] or 0),
        "attempts_gt1": int(rows[3] or 0),
        "worker_cpu_ms": cpu * 1000 / n,
        "children_cpu_ms": kids * 1000 / n,
        "mariadbd_cpu_ms": db * 1000 / n,
    }
    if variant == "append":
        out["ran_twice"] = sum(1 for c in seen.values() if c > 1)
        out["missing"] = sum(1 for i in range(first, last + 1) if i not in seen)
    return out


def run(config: BenchConfig, args: argparse.Namespace, stack: Stack | None = None) -> Result:
    n = args.jobs or (50 if config.smoke else 2000)
    spawns = args.spawns or (100 if config.smoke else 1600)
    timeout = args.timeout or max(60.0, n / 20)
    reps: list[dict[str, Any]] = []
    result = Result()
    with maybe_stack(config, stack) as st:
        if args.mode == "warm" and st.worker is None:
            st.start_worker()
        for rep in range(config.reps):
            row: dict[str, Any] = {}
            log(f"execute rep {rep + 1}/{config.reps}: {spawns} reference spawns")
            row["spawn"] = spawn_rate(spawns)
            for variant in VARIANTS:
                log(f"execute rep {rep + 1}/{config.reps}: {n} jobs `{variant}` ({args.mode})")
                row[variant] = drain(st, variant, n, args.mode, timeout, f"{rep}-{variant}")
            reps.append(row)
        if args.profile:
            result.tables.extend(_profile(st, args, n, timeout))
    result.tables[:0] = _tables(config, args, reps, n)
    result.raw["execute"] = reps
    return result


def _profile(st: Stack, args: argparse.Namespace, n: int, timeout: float) -> list[Table]:
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "txt" if args.profile_format == "raw" else args.profile_format
    path = out / f"worker-execute.{suffix}"
    if st.worker is None:
        st.start_worker()
    assert st.worker is not None
    log(f"execute: profiling the worker with py-spy over {n} jobs `true` (not counted)")
    with Profiler(
        st.worker.pid, path, args.profile_format, args.profile_rate, not args.profile_wall
    ):
        time.sleep(0.5)  # py-spy attaches to every process of the tree
        first, last = insert_queued(st, ["true"] * n)
        t0 = time.time()
        notify(st, "default", n)
        wait_final(st, first, last, timeout)
        seconds = time.time() - t0
    mode = "all threads" if args.profile_wall else "GIL holders"
    title = (
        f"Profile ({mode}): worker role running {n} jobs `true` "
        f"({n / seconds:.0f} jobs/s under py-spy)"
    )
    if args.profile_format != "raw":
        table = Table(title, ["file"])
        table.add(note_for(path, args.profile_format))
        return [table]
    return summarise(
        path, title, rate=args.profile_rate, units=n, unit="job", wall=args.profile_wall
    )


def _tables(
    config: BenchConfig, args: argparse.Namespace, reps: list[dict[str, Any]], n: int
) -> list[Table]:
    settings = (
        f"WORKER_PROCESSES={config.worker_processes or 'default'}, "
        f"WORKER_THREADS={config.worker_threads or 'default'}"
    )
    per_rep = Table(
        f"2. Execution per rep: {n} jobs, {args.mode} worker ({settings})",
        [
            "rep",
            "spawn/s (seq)",
            "true jobs/s",
            "ratio true/spawn",
            "append jobs/s",
            "ratio append/spawn",
            "lost t/a",
            "run twice (file)",
            "claimed twice t/a",
        ],
    )
    for i, r in enumerate(reps, 1):
        t, a = r["true"], r["append"]
        per_rep.add(
            i,
            f"{r['spawn']:.0f}",
            f"{t['rate']:.0f}",
            f"{t['rate'] / r['spawn']:.3f}",
            f"{a['rate']:.0f}",
            f"{a['rate'] / r['spawn']:.3f}",
            f"{t['lost']} / {a['lost']}",
            f"{a['ran_twice']} (missing {a['missing']})",
            f"{t['claimed_twice']} / {a['claimed_twice']}",
        )
    summary = Table(
        f"2. Execution summary (median [min-max] over {len(reps)} reps)",
        ["figure", "jobs `true`", "jobs `echo $ID >> file`"],
    )

    def col(variant: str, key: str) -> list[float]:
        return [r[variant][key] for r in reps]

    spawn = [r["spawn"] for r in reps]
    summary.add("reference spawn/s (sequential subprocess.run)", cell(spawn), cell(spawn))
    summary.add("jobs/s to all final", cell(col("true", "rate")), cell(col("append", "rate")))
    summary.add(
        "ratio jobs/s / spawn/s (same rep)",
        cell([r["true"]["rate"] / r["spawn"] for r in reps], 3),
        cell([r["append"]["rate"] / r["spawn"] for r in reps], 3),
    )
    summary.add("drain seconds", cell(col("true", "seconds")), cell(col("append", "seconds")))
    summary.add(
        "enqueue seconds (messages)",
        cell(col("true", "enqueue_s")),
        cell(col("append", "enqueue_s")),
    )
    if args.mode == "cold":
        summary.add(
            "worker start-up s", cell(col("true", "ready_s")), cell(col("append", "ready_s"))
        )
    summary.add(
        "worker Python CPU ms/job",
        cell(col("true", "worker_cpu_ms"), 2),
        cell(col("append", "worker_cpu_ms"), 2),
    )
    summary.add(
        "job processes CPU ms/job",
        cell(col("true", "children_cpu_ms"), 2),
        cell(col("append", "children_cpu_ms"), 2),
    )
    summary.add(
        "mariadbd CPU ms/job (shared server)",
        cell(col("true", "mariadbd_cpu_ms"), 2),
        cell(col("append", "mariadbd_cpu_ms"), 2),
    )
    summary.add(
        "longest pause between two job starts, s",
        cell(col("true", "longest_pause_s"), 2),
        cell(col("append", "longest_pause_s"), 2),
    )
    summary.add("lost (not final), all reps", sum(col("true", "lost")), sum(col("append", "lost")))
    summary.add(
        "not succeeded, all reps",
        sum(col("true", "not_succeeded")),
        sum(col("append", "not_succeeded")),
    )
    summary.add(
        "run twice: ids twice in the file, all reps", "(no file)", sum(col("append", "ran_twice"))
    )
    summary.add("ids missing from the file, all reps", "(no file)", sum(col("append", "missing")))
    summary.add(
        "claimed twice (lease > 1) / attempts > 1",
        f"{sum(col('true', 'claimed_twice'))} / {sum(col('true', 'attempts_gt1'))}",
        f"{sum(col('append', 'claimed_twice'))} / {sum(col('append', 'attempts_gt1'))}",
    )
    summary.notes += [
        "jobs/s = N / (last finished_at - first message sent)"
        + (
            "; cold: from the worker's launch, and its CPU includes its start-up"
            if args.mode == "cold"
            else ""
        ),
        "a pause of ~5 s between two job starts is a wake-up message spent without a claim: "
        "the job waited for the sweeper's top-up",
        "lost, run twice and missing must be 0; `true` is checked in the database only "
        "(lease and attempts), the append variant also by the ids in its file",
        "each job runs `/bin/sh -c COMMAND` (both commands are shell builtins); the append "
        "variant adds an open+write+close of a shared file",
    ]
    return [per_rep, summary]


def main() -> None:
    standalone(__doc__.splitlines()[0], add_args, run)


if __name__ == "__main__":
    main()
