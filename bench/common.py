"""What every benchmark script shares: its result, and how it runs on its own."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import profiler, stats
from bench.stack import BenchConfig, Stack, add_common_args, install_signal_handlers


@dataclass
class Result:
    """The tables a figure prints, and its raw per-repetition values."""

    tables: list[stats.Table] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def print(self) -> None:
        for table in self.tables:
            print(table.render(), flush=True)


Runner = Callable[[BenchConfig, argparse.Namespace, Stack | None], Result]
AddArgs = Callable[[argparse.ArgumentParser], None]


def header(config: BenchConfig) -> str:
    """One line that says where and how the figures were taken."""
    load = open("/proc/loadavg").read().split()[:3]
    mode = "SMOKE (tiny sizes; claims nothing)" if config.smoke else f"{config.reps} reps"
    return (
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}, "
        f"Python {platform.python_version()}, load average {' '.join(load)}; {mode}"
    )


def standalone(description: str, add_args: AddArgs, run: Runner) -> None:
    """Parse the options, run one figure on a stack of its own, print its tables."""
    parser = argparse.ArgumentParser(description=description)
    add_args(parser)
    add_common_args(parser)
    args = parser.parse_args()
    if getattr(args, "profile", None) and (why := profiler.check()):
        parser.error(f"--profile: {why}")  # before the reps, not after them
    install_signal_handlers()
    config = BenchConfig.from_args(args)
    print(header(config), flush=True)
    result = run(config, args, None)
    print()
    result.print()
    if args.json:
        stats.dump_json(args.json, result.tables, result.raw)


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
