"""Sampling profiles of the role processes with py-spy, and a text summary of the hot spots.

`py-spy record --subprocesses --pid PID` follows the whole tree of a role (uvicorn workers,
Dramatiq worker processes). The default format is `raw` (collapsed stacks: speedscope.app and
flamegraph.pl open it), which this module also summarises: the functions where samples land
(self) and the functions on the stack (inclusive), as a share of all samples of active threads.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

from bench.stack import BIN
from bench.stats import Table

PY_SPY = str(BIN / "py-spy") if (BIN / "py-spy").exists() else shutil.which("py-spy") or "py-spy"
FORMATS = ("raw", "flamegraph", "speedscope")
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


class Profiler:
    """py-spy recording one process tree until `stop()`."""

    def __init__(
        self, pid: int, output: Path, fmt: str = "raw", rate: int = 100, gil: bool = True
    ) -> None:
        self.output = output
        self.fmt = fmt
        self.rate = rate
        argv = [PY_SPY, "record", "--pid", str(pid), "--subprocesses", "--nolineno"]
        argv += ["--rate", str(rate), "--format", fmt, "--output", str(output)]
        if gil:
            argv.append("--gil")  # only samples holding the GIL: Python code on the CPU
        self.log = output.with_suffix(output.suffix + ".log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGINT makes py-spy write its file; give it time, then make sure it is gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()

    def __enter__(self) -> Profiler:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


#: leaf frames of threads that wait (py-spy counts a thread blocked on a lock as active)
WAITS = frozenset(
    {
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
        "Thread.join (threading.py)",
        "Queue.get (queue.py)",
        "sleep (time.py)",
        # C calls that wait (sleep, select, futex) show as the Python frame that made them
        "_RedisConsumer.__next__ (dramatiq/brokers/redis.py)",
        "_CtypesTimeoutManager.run (dramatiq/middleware/time_limit.py)",
        "worker_process (dramatiq/cli.py)",
        "main (dramatiq/cli.py)",
        "_PollLikeSelector.select (selectors.py)",
    }
)


def _package(frame: str) -> str:
    """`Connection.query (MySQLdb/connections.py)` -> `MySQLdb`; `x (queue.py)` -> `queue`;
    `values (<sqlalchemy generated ... wrapper for sqlalchemy.sql.dml...>)` -> `sqlalchemy`."""
    match = re.search(r"\(([^()]*)\)$", frame)
    where = match.group(1) if match else frame
    if "<" in where or not match:
        named = re.search(r"\b([a-z_]\w*)\.\w+\.", frame)
        return named.group(1) if named else where
    return where.split("/", 1)[0].removesuffix(".py")


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        frames = [
            f.strip()
            for f in match["stack"].split(";")
            if f.strip() and not f.startswith(("process ", "thread "))
        ]
        if frames:
            stacks.append((frames, int(match["count"])))
    return stacks


def summarise(
    path: Path,
    title: str,
    *,
    rate: int = 100,
    units: int = 0,
    unit: str = "",
    top: int = 15,
    wall: bool = False,
) -> list[Table]:
    """Tables of the hottest functions and packages of a raw (collapsed) py-spy file.

    With `wall` (a profile of every thread), samples whose leaf is a wait (a thread-pool
    thread waiting for work, a consumer sleeping between polls) are left out.
    With `units` (requests, jobs) a note gives the sampled time per unit, in ms: samples /
    rate / units (an estimate of the time the role's threads were busy per unit, not a
    measurement of CPU time).
    """
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = waiting = 0
    for frames, count in _stacks(path):
        if wall and frames[-1] in WAITS:
            waiting += count
            continue
        total += count
        self_counts[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            incl_counts[frame] += count
    total = max(total, 1)
    table = Table(title, ["rank", "self %", "function (self)", "incl %", "function (on stack)"])
    self_top = self_counts.most_common(top)
    incl_top = incl_counts.most_common(top)
    for i in range(max(len(self_top), len(incl_top))):
        s_name, s_count = self_top[i] if i < len(self_top) else ("", 0)
        i_name, i_count = incl_top[i] if i < len(incl_top) else ("", 0)
        table.add(
            i + 1,
            f"{100 * s_count / total:.1f}" if s_name else "",
            s_name,
            f"{100 * i_count / total:.1f}" if i_name else "",
            i_name,
        )
    table.notes.append(
        f"{total} samples"
        + (
            f" of busy threads ({waiting} of waiting threads left out)"
            if wall
            else " holding the GIL"
        )
        + f"; profile in {path}"
    )
    if units:
        per_unit = total / rate / units * 1000
        table.notes.append(
            f"sampled time per {unit}: {per_unit:.3f} ms over {units} {unit}s (all processes "
            "of the role added up; py-spy slows the role down)"
        )
    by_package = Table(f"{title}: self time by package", ["package", "self %"])
    for name, count in packages.most_common(12):
        by_package.add(name, f"{100 * count / total:.1f}")
    return [table, by_package]


def check() -> str | None:
    """None if py-spy can run here; else why not."""
    try:
        result = subprocess.run(
            [PY_SPY, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        return f"py-spy not found ({exc}): .venv/bin/pip install -e '.[bench]' installs it"
    if result.returncode != 0:
        return f"py-spy does not run: {result.stderr.strip()}"
    return None


def note_for(path: Path, fmt: str) -> str:
    if fmt == "raw":
        return f"collapsed stacks in {path} (open in https://speedscope.app or flamegraph.pl)"
    return f"{fmt} profile in {path}"
