"""Figure 4, live output: from a line printed by a running job to that line readable over HTTP.

The job prints its clock (`date +%s.%N`) every `--interval` seconds; a reader takes the time
at which each line first becomes readable through the API, and the difference is the delay.
Two readers, chosen with --reader:

- `poll`: `GET /jobs/{id}/output?offset=N` every `--poll` seconds (what works today);
- `follow`: one `GET /jobs/{id}/output?follow=1`, read as the chunks arrive (streaming, not
  implemented yet: when the server answers with the output so far and ends the response
  before the job is final, the reader says "not supported" and the row shows n/a).

    .venv/bin/python -m bench.output [--lines 20] [--interval 0.3] [--reader poll follow]
"""

from __future__ import annotations

import argparse
import http.client
import time
from collections.abc import Callable
from typing import Any

from bench.client import Api
from bench.common import Result, log, standalone
from bench.stack import BenchConfig, Stack, maybe_stack
from bench.stats import Table, cell, percentile

#: a reader returns (arrival time, line) for each complete line it got, and whether it could
#: follow the output to the job's end
Reader = Callable[[str, str, int, float], tuple[list[tuple[float, str]], bool]]


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--lines", type=int, default=None, help="lines per job (20; smoke 3)")
    group.add_argument("--interval", type=float, default=None, help="s between lines (0.3)")
    group.add_argument("--poll", type=float, default=0.01, help="poll period, s (0.01)")
    group.add_argument(
        "--reader", nargs="+", choices=("poll", "follow"), default=["poll", "follow"]
    )


def printer(lines: int, interval: float) -> str:
    """A job that prints its clock, `lines` times, `interval` seconds apart."""
    return f"i=0; while [ $i -lt {lines} ]; do date +%s.%N; sleep {interval}; i=$((i+1)); done"


def _split_lines(buffer: bytes, arrived: float, out: list[tuple[float, str]]) -> bytes:
    """Move the complete lines of `buffer` into `out`, stamped `arrived`; return the rest."""
    *complete, rest = buffer.split(b"\n")
    out.extend((arrived, line.decode()) for line in complete if line)
    return rest


def poll_reader(url: str, token: str, job_id: int, period: float) -> tuple[list[Any], bool]:
    """GET .../output?offset=N in a loop until the job is final and nothing new comes."""
    api = Api(url, token)
    got: list[tuple[float, str]] = []
    offset, pending = 0, b""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            reply = api.request("GET", f"/jobs/{job_id}/output?offset={offset}")
            if reply.status != 200:
                raise RuntimeError(f"GET output answered {reply.status}")
            if reply.body:
                offset = int(reply.headers["x-output-offset"]) + len(reply.body)
                pending = _split_lines(pending + reply.body, reply.received, got)
            if reply.headers.get("x-job-state") in ("succeeded", "failed", "cancelled"):
                return got, True
            time.sleep(period)
    finally:
        api.close()
    raise RuntimeError(f"job {job_id} still running after 300 s")


def follow_reader(url: str, token: str, job_id: int, _period: float) -> tuple[list[Any], bool]:
    """One streaming GET ...?follow=1; (lines, False) if the server did not keep it open."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    got: list[tuple[float, str]] = []
    try:
        conn.request(
            "GET", f"/jobs/{job_id}/output?follow=1", headers={"Authorization": f"Bearer {token}"}
        )
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET output?follow=1 answered {response.status}")
        pending = b""
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            pending = _split_lines(pending + chunk, time.time(), got)
    finally:
        conn.close()
    # A server that streams ends the response once the job is final; one that does not
    # answers at once with the output so far, while the job still runs.
    api = Api(url, token)
    try:
        final = api.job(job_id)["state"] in ("succeeded", "failed", "cancelled")
    finally:
        api.close()
    return got, final and bool(got)


READERS: dict[str, Reader] = {"poll": poll_reader, "follow": follow_reader}


def one_job(url: str, token: str, reader: str, lines: int, interval: float, period: float) -> Any:
    """Submit a printing job and read it live; the delays in ms, or None if unsupported."""
    api = Api(url, token)
    try:
        job, _ = api.submit(printer(lines, interval))
    finally:
        api.close()
    got, followed = READERS[reader](url, token, job["id"], period)
    api = Api(url, token)
    try:
        api.wait_final(job["id"], timeout=lines * interval + 60)  # no overlap with the next job
    finally:
        api.close()
    if not followed:
        return None
    delays = [(arrived - float(text)) * 1000 for arrived, text in got]
    if len(delays) != lines:
        raise RuntimeError(f"{reader}: read {len(delays)} lines of {lines}")
    return delays


def run(config: BenchConfig, args: argparse.Namespace, stack: Stack | None = None) -> Result:
    lines = args.lines or (3 if config.smoke else 20)
    interval = args.interval or (0.2 if config.smoke else 0.3)
    reps: list[dict[str, Any]] = []
    with maybe_stack(config, stack) as st:
        web = st.web or st.start_web()
        if st.worker is None:
            st.start_worker()
        for rep in range(config.reps):
            row: dict[str, Any] = {}
            for reader in args.reader:
                log(f"output rep {rep + 1}/{config.reps}: {reader}, {lines} lines")
                row[reader] = one_job(web.url, config.token, reader, lines, interval, args.poll)
            reps.append(row)
    result = Result(raw={"output": reps})
    table = Table(
        f"4. Live output delay (ms): line printed -> readable over HTTP ({lines} lines, "
        f"{interval:g} s apart; median [min-max] over {len(reps)} reps)",
        ["reader", "p50", "p99", "max", "min"],
    )
    for reader in args.reader:
        values = [r[reader] for r in reps]
        if any(v is None for v in values):
            table.add(reader, "n/a", "n/a", "n/a", "not supported by the server (yet)")
            continue
        table.add(
            f"{reader} (every {args.poll * 1000:g} ms)" if reader == "poll" else reader,
            cell([percentile(v, 50) for v in values], 1),
            cell([percentile(v, 99) for v in values], 1),
            cell([max(v) for v in values], 1),
            cell([min(v) for v in values], 1),
        )
    table.notes.append(
        "the worker writes a running job's output to the database at most once a second "
        "(actors/execution.py OUTPUT_FLUSH_INTERVAL_S) after its 0.25 s poll, so the poll "
        "reader's delay is bounded by about 1.25 s plus the poll period"
    )
    result.tables.append(table)
    return result


def main() -> None:
    standalone(__doc__.splitlines()[0], add_args, run)


if __name__ == "__main__":
    main()
