"""wrk as the load generator: one bounded run, its WRKJSON summary parsed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from bench.stack import BENCH_DIR

WRK = shutil.which("wrk") or "/usr/bin/wrk"
SCRIPTS = BENCH_DIR / "wrk"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    url: str,
    script: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    token: str = "",
    body: str | None = None,
) -> WrkResult:
    """Run `wrk -t threads -c connections -d duration` with one of bench/wrk/*.lua."""
    if not os.path.exists(WRK):
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    env = dict(os.environ, BENCH_WRK_DIR=str(SCRIPTS), BENCH_TOKEN=token)
    if body is not None:
        env["BENCH_BODY"] = body
    argv = [
        WRK,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPTS / script),
        url,
    ]
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{result.stdout}{result.stderr}")
    data = json.loads(line.removeprefix("WRKJSON "))
    non_2xx = data["err_status"]
    errors = sum(data[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        non_2xx=non_2xx,
        p50_ms=data["lat_p50_us"] / 1000,
        p90_ms=data["lat_p90_us"] / 1000,
        p99_ms=data["lat_p99_us"] / 1000,
        max_ms=data["lat_max_us"] / 1000,
    )
