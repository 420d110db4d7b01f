"""Figure 5, memory: RSS and PSS of the roles, idle and after load; a job printing 1 GiB.

Per repetition the web and worker roles are started afresh (project defaults unless told):
- idle: 2 s after both are ready; the web per process, the worker summed over its process tree
  (the Dramatiq master and its worker processes; job commands are never counted);
- after load: wrk posts `true` jobs for `--load-duration` s while the worker runs them, then
  once every job is final; also the peak RSS so far (VmHWM) of each process;
- big output: one job prints `--output-size` bytes (`head -c N /dev/zero | tr '\\0' x`); the
  worker processes' RSS is sampled every 20 ms while it runs, and the database row is read
  afterwards: what it stores is bounded by JOBRUNNER_OUTPUT_LIMIT (1 MiB by default).

RSS counts pages shared after fork once per process; PSS splits them (from smaps_rollup).

    .venv/bin/python -m bench.memory [--output-size 1073741824] [--load-duration 5]
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from bench import procs
from bench.client import Api, parse_time
from bench.common import Result, log, standalone
from bench.loadgen import run_wrk
from bench.seed import wait_final
from bench.stack import BenchConfig, Role, Stack, maybe_stack
from bench.stats import Table, cell

MIB = procs.MIB


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("memory")
    group.add_argument("--output-size", type=int, default=None, help="bytes printed (1 GiB)")
    group.add_argument("--load-duration", type=float, default=None, help="wrk seconds (5)")
    group.add_argument("--settle", type=float, default=None, help="idle seconds (2)")


def snapshot(role: Role) -> list[procs.Memory]:
    """Memory of each Python process of the role (its job commands left out)."""
    found = [procs.memory(pid) for pid in role.python_tree()]
    return [m for m in found if m is not None]


def totals(mems: list[procs.Memory]) -> dict[str, float]:
    return {
        "procs": len(mems),
        "rss": sum(m.rss for m in mems) / MIB,
        "pss": sum(m.pss for m in mems) / MIB,
        "hwm": sum(m.hwm for m in mems) / MIB,
        "per_rss": [round(m.rss / MIB, 1) for m in mems],
        "per_pss": [round(m.pss / MIB, 1) for m in mems],
        "max_hwm": max((m.hwm for m in mems), default=0) / MIB,
    }


class Sampler:
    """Samples the RSS of fixed pids every `period` s in a thread; keeps the maxima."""

    def __init__(self, pids: list[int], period: float = 0.02) -> None:
        self.pids, self.period = pids, period
        self.max_sum = 0
        self.max_each = dict.fromkeys(pids, 0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            values = {pid: procs.rss(pid) for pid in self.pids}
            self.max_sum = max(self.max_sum, sum(values.values()))
            for pid, value in values.items():
                self.max_each[pid] = max(self.max_each[pid], value)
            self.stop.wait(self.period)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def big_output(st: Stack, web: Role, worker: Role, size: int, token: str) -> dict[str, Any]:
    api = Api(web.url, token)
    try:
        pids = worker.python_tree()
        before = totals(snapshot(worker))
        sampler = Sampler(pids)
        try:
            job, _ = api.submit(f"head -c {size} /dev/zero | tr '\\0' x")
            final = api.wait_final(job["id"], timeout=600, interval=0.2)
        finally:
            sampler.finish()
        after = totals(snapshot(worker))
        reply = api.request("GET", f"/jobs/{job['id']}/output")
    finally:
        api.close()
    stored = st.query(
        "SELECT LENGTH(output), output_bytes, output_offset FROM jobs WHERE id = %s", (job["id"],)
    )[0]
    started, finished = parse_time(final["started_at"]), parse_time(final["finished_at"])
    seconds = (finished - started) if started is not None and finished is not None else 0.0
    return {
        "state": final["state"],
        "seconds": seconds,
        "mib_per_s": size / MIB / seconds if seconds else float("nan"),
        "rss_before": before["rss"],
        "max_sum_rss": sampler.max_sum / MIB,
        "max_proc_rss": max(sampler.max_each.values()) / MIB,
        "hwm_after": after["max_hwm"],
        "stored_bytes": int(stored[0] or 0),
        "output_bytes": int(stored[1]),
        "output_offset": int(stored[2]),
        "api_bytes": len(reply.body),
        "truncated_header": reply.headers.get("x-output-truncated"),
    }


def run(config: BenchConfig, args: argparse.Namespace, stack: Stack | None = None) -> Result:
    size = args.output_size or (32 * MIB if config.smoke else 1024 * MIB)
    load = args.load_duration or (1.0 if config.smoke else 5.0)
    settle = args.settle if args.settle is not None else (0.5 if config.smoke else 2.0)
    reps: list[dict[str, Any]] = []
    with maybe_stack(config, stack) as st:
        for rep in range(config.reps):
            # fresh roles for each rep: "idle" means just started and ready (a smoke run
            # reuses running roles, to stay short)
            if not (config.smoke and st.web is not None and st.worker is not None):
                st.stop_worker()
                if st.web is not None:
                    st.stop_role(st.web)
                st.start_web()
                st.start_worker()
            web, worker = st.web, st.worker
            assert web is not None and worker is not None
            time.sleep(settle)
            row: dict[str, Any] = {"web_idle": totals(snapshot(web))}
            row["worker_idle"] = totals(snapshot(worker))
            log(f"memory rep {rep + 1}/{config.reps}: load {load:g} s")
            first = st.max_job_id() + 1
            wrk = run_wrk(
                f"{web.url}/jobs", "post_jobs.lua", duration=load,
                connections=2 if config.smoke else 16, token=config.token,
            )  # fmt: skip
            last = st.max_job_id()
            if wrk.errors or wrk.non_2xx or last < first:
                raise RuntimeError(f"the load failed: {wrk}")
            done, complete = wait_final(st, first, last, timeout=max(120.0, wrk.requests / 20))
            if not complete:
                raise RuntimeError(f"after the load {last - first + 1 - done} jobs are not final")
            time.sleep(settle / 2)
            row["load_jobs"] = last - first + 1
            row["web_load"] = totals(snapshot(web))
            row["worker_load"] = totals(snapshot(worker))
            log(f"memory rep {rep + 1}/{config.reps}: a job printing {size} bytes")
            row["big"] = big_output(st, web, worker, size, config.token)
            reps.append(row)
    result = Result(raw={"memory": reps})
    result.tables = _tables(config, reps, size, load)
    return result


def _tables(config: BenchConfig, reps: list[dict[str, Any]], size: int, load: float) -> list[Table]:
    roles = Table(
        f"5. Memory of the roles, MiB (median [min-max] over {len(reps)} reps; fresh roles "
        "each rep)",
        ["role", "processes", "RSS idle", "PSS idle", "RSS after load", "PSS after load",
         "peak RSS (VmHWM, sum)", "per-process RSS after load"],
    )  # fmt: skip
    web_n = config.web_concurrency or "default"
    worker_n = (
        f"{config.worker_processes or 'default'} x {config.worker_threads or 'default'} threads"
    )
    for key, label in (
        ("web", f"web (WEB_CONCURRENCY={web_n})"),
        ("worker", f"worker ({worker_n})"),
    ):
        idle = [r[f"{key}_idle"] for r in reps]
        loaded = [r[f"{key}_load"] for r in reps]
        roles.add(
            label,
            "/".join(sorted({str(x["procs"]) for x in idle + loaded})),
            cell([x["rss"] for x in idle], 1),
            cell([x["pss"] for x in idle], 1),
            cell([x["rss"] for x in loaded], 1),
            cell([x["pss"] for x in loaded], 1),
            cell([x["hwm"] for x in loaded], 1),
            " + ".join(str(v) for v in loaded[-1]["per_rss"]),
        )
    roles.notes.append(
        f"load: wrk -c16 POST /jobs for {load:g} s with the worker running the jobs "
        f"({', '.join(str(r['load_jobs']) for r in reps)} jobs), measured once all were final"
    )
    big = Table(
        f"5. A job printing {size} bytes ({size / MIB:.0f} MiB) (median [min-max] over "
        f"{len(reps)} reps)",
        ["figure", "value"],
    )
    b = [r["big"] for r in reps]
    big.add("final state", ", ".join(x["state"] for x in b))
    big.add("run time s (started_at -> finished_at)", cell([x["seconds"] for x in b], 2))
    big.add("output throughput MiB/s", cell([x["mib_per_s"] for x in b]))
    big.add("worker tree RSS before, MiB", cell([x["rss_before"] for x in b], 1))
    big.add(
        "worker tree RSS peak while it ran (20 ms samples), MiB",
        cell([x["max_sum_rss"] for x in b], 1),
    )
    big.add(
        "largest worker process RSS peak (samples), MiB", cell([x["max_proc_rss"] for x in b], 1)
    )
    big.add("largest worker process VmHWM after, MiB", cell([x["hwm_after"] for x in b], 1))
    big.add(
        "stored in the database: LENGTH(output), bytes", cell([x["stored_bytes"] for x in b], 0)
    )
    big.add(
        "output_bytes (all printed) / output_offset",
        f"{b[-1]['output_bytes']} / {b[-1]['output_offset']}",
    )
    big.add(
        "GET /jobs/{id}/output bytes; X-Output-Truncated",
        f"{b[-1]['api_bytes']}; {b[-1]['truncated_header']}",
    )
    big.notes.append(
        "the job's own processes (sh, head, tr) are not counted: only the role's Python processes"
    )
    return [roles, big]


def main() -> None:
    standalone(__doc__.splitlines()[0], add_args, run)


if __name__ == "__main__":
    main()
