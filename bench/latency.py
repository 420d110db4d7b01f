"""Figure 3, pickup latency: from the 201 of POST /jobs to the job's `started_at`, p50 and p99.

(a) idle: one job at a time, with gaps of 1-1.5 s (so every job finds the worker idle);
(b) steady: an open-loop client submitting at a fixed rate (100 jobs/s) for some seconds.

Both clocks are this machine's: the client takes time.time() when it has read the 201, the
worker stamps `started_at` when it claims the job (the API shows it to the millisecond,
truncated, so values may read up to 1 ms early). Also shown: `started_at - created_at`, the
same delay as the server sees it (from the INSERT, before the message is sent).

    .venv/bin/python -m bench.latency [--samples 30] [--rate 100] [--duration 10]
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import Any

from bench.client import Api, parse_time
from bench.common import Result, log, standalone
from bench.stack import BenchConfig, Stack, maybe_stack
from bench.stats import Table, cell, percentile

SENDERS = 4


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("latency")
    group.add_argument("--samples", type=int, default=None, help="idle samples per rep (30)")
    group.add_argument("--gap", type=float, nargs=2, default=None, help="idle gap s (1.0 1.5)")
    group.add_argument("--rate", type=float, default=None, help="steady jobs/s (100)")
    group.add_argument("--duration", type=float, default=None, help="steady seconds (10)")


def _delays(api: Api, sent: list[tuple[int, float]], timeout: float) -> dict[str, list[float]]:
    """Fetch each job once final; the pickup delays in ms."""
    pickup, server = [], []
    for job_id, received in sent:
        job = api.wait_final(job_id, timeout)
        started, created = parse_time(job["started_at"]), parse_time(job["created_at"])
        if started is None or created is None:
            continue
        pickup.append((started - received) * 1000)
        server.append((started - created) * 1000)
    return {"pickup": pickup, "server": server}


def idle_run(url: str, token: str, samples: int, gap: tuple[float, float]) -> dict[str, Any]:
    api = Api(url, token)
    sent: list[tuple[int, float]] = []
    try:
        for _ in range(samples):
            time.sleep(random.uniform(*gap))
            job, received = api.submit("true")
            sent.append((job["id"], received))
        return _delays(api, sent, timeout=30)
    finally:
        api.close()


def steady_run(url: str, token: str, rate: float, duration: float) -> dict[str, Any]:
    """Open loop: job i is due at t0 + i/rate; SENDERS threads share the schedule."""
    total = max(1, int(rate * duration))
    sent: list[tuple[int, float]] = []
    late: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    t0 = time.time() + 0.2

    def sender(k: int) -> None:
        api = Api(url, token)
        try:
            for i in range(k, total, SENDERS):
                due = t0 + i / rate
                wait = due - time.time()
                if wait > 0:
                    time.sleep(wait)
                behind = time.time() - due
                job, received = api.submit("true")
                with lock:
                    sent.append((job["id"], received))
                    late.append(behind)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            api.close()

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + 120)
    if errors:
        raise RuntimeError(f"steady submitter failed: {errors[0]!r}")
    elapsed = max(r for _, r in sent) - t0
    api = Api(url, token)
    try:
        out = _delays(api, sorted(sent), timeout=60)
    finally:
        api.close()
    out["achieved_rate"] = len(sent) / elapsed if elapsed > 0 else float("nan")
    out["max_behind_ms"] = max(late) * 1000
    return out


def run(config: BenchConfig, args: argparse.Namespace, stack: Stack | None = None) -> Result:
    samples = args.samples or (3 if config.smoke else 30)
    gap = tuple(args.gap) if args.gap else ((0.2, 0.3) if config.smoke else (1.0, 1.5))
    rate = args.rate or (20.0 if config.smoke else 100.0)
    duration = args.duration or (0.5 if config.smoke else 10.0)
    reps: list[dict[str, Any]] = []
    with maybe_stack(config, stack) as st:
        web = st.web or st.start_web()
        if st.worker is None:
            st.start_worker()
        time.sleep(0.5 if config.smoke else 2.0)  # let the worker settle into its idle polling
        for rep in range(config.reps):
            where = f"latency rep {rep + 1}/{config.reps}"
            log(f"{where}: {samples} lone jobs, gaps {gap[0]}-{gap[1]} s")
            idle = idle_run(web.url, config.token, samples, gap)  # type: ignore[arg-type]
            log(f"latency rep {rep + 1}/{config.reps}: steady {rate:g} jobs/s for {duration:g} s")
            steady = steady_run(web.url, config.token, rate, duration)
            reps.append({"idle": idle, "steady": steady})
            time.sleep(0.5)
    result = Result(raw={"latency": reps})
    result.tables = _tables(reps, samples, gap, rate, duration)
    return result


def _tables(
    reps: list[dict[str, Any]], samples: int, gap: Any, rate: float, duration: float
) -> list[Table]:
    per_rep = Table(
        "3. Pickup latency per rep (ms): 201 received -> started_at",
        ["rep", "idle p50", "idle p99", "idle max", "steady p50", "steady p99", "steady max",
         "steady rate achieved"],
    )  # fmt: skip
    for i, r in enumerate(reps, 1):
        idle, steady = r["idle"]["pickup"], r["steady"]["pickup"]
        per_rep.add(
            i,
            f"{percentile(idle, 50):.1f}",
            f"{percentile(idle, 99):.1f}",
            f"{max(idle):.1f}",
            f"{percentile(steady, 50):.1f}",
            f"{percentile(steady, 99):.1f}",
            f"{max(steady):.1f}",
            f"{r['steady']['achieved_rate']:.1f}/s",
        )
    summary = Table(
        f"3. Pickup latency summary (ms; median [min-max] over {len(reps)} reps of the "
        "per-rep percentile)",
        ["case", "p50 201->started", "p99 201->started", "p50 created->started",
         "p99 created->started"],
    )  # fmt: skip

    def pct(case: str, key: str, p: float) -> list[float]:
        return [percentile(r[case][key], p) for r in reps]

    summary.add(
        f"(a) idle: {samples} lone jobs, gaps {gap[0]}-{gap[1]} s",
        cell(pct("idle", "pickup", 50), 1),
        cell(pct("idle", "pickup", 99), 1),
        cell(pct("idle", "server", 50), 1),
        cell(pct("idle", "server", 99), 1),
    )
    summary.add(
        f"(b) steady: {rate:g} jobs/s for {duration:g} s",
        cell(pct("steady", "pickup", 50), 1),
        cell(pct("steady", "pickup", 99), 1),
        cell(pct("steady", "server", 50), 1),
        cell(pct("steady", "server", 99), 1),
    )
    summary.notes += [
        "percentiles are nearest-rank over the jobs of one rep; with 30 idle samples p99 is "
        "the largest of them",
        "the steady client is open-loop (4 threads, a fixed schedule); largest lag behind the "
        f"schedule: {max(r['steady']['max_behind_ms'] for r in reps):.0f} ms",
        "started_at is the worker's clock (utcnow() in Python) when its claim transaction "
        "begins, after the message was fetched; outliers near 5 s are jobs whose wake-up "
        "message was spent without a claim, woken by the sweeper's top-up (STUCK_AFTER_S)",
    ]
    return [per_rep, summary]


def main() -> None:
    standalone(__doc__.splitlines()[0], add_args, run)


if __name__ == "__main__":
    main()
