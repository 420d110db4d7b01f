"""Run every benchmark on one shared stack and print all the tables at the end.

    .venv/bin/python -m bench.run_all              # the full run (about 15-20 minutes)
    .venv/bin/python -m bench.run_all --smoke      # everything tiny, for CI: prints, claims nothing
    .venv/bin/python -m bench.run_all --only submit execute --profile /tmp/prof
    .venv/bin/python -m bench.run_all --args submit "--duration 20" --args scale "--rows 200000"

Common options (--reps, --web-concurrency, ...) apply to every figure; `--args FIGURE "..."`
passes a figure its own options, as its script takes them (see `python -m bench.FIGURE -h`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from types import ModuleType

from bench import execute, latency, memory, output, roundtrips, scale, stats, submit
from bench.baseline import BASELINE_DIR, baseline_available
from bench.common import Result, header, log
from bench.stack import BenchConfig, Stack, add_common_args, install_signal_handlers

FIGURES: dict[str, ModuleType] = {
    "roundtrips": roundtrips,
    "submit": submit,
    "execute": execute,
    "latency": latency,
    "output": output,
    "memory": memory,
    "scale": scale,
}
PROFILED = ("submit", "execute")


def figure_args(
    name: str, module: ModuleType, argv: list[str], common: list[str]
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"bench.{name}")
    module.add_args(parser)
    add_common_args(parser)
    return parser.parse_args(common + argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), default=list(FIGURES))
    parser.add_argument("--skip", nargs="+", choices=list(FIGURES), default=[])
    parser.add_argument(
        "--args",
        nargs=2,
        action="append",
        metavar=("FIGURE", "ARGS"),
        default=[],
        help="options for one figure's script, e.g. --args submit '--duration 20'",
    )
    parser.add_argument("--profile", metavar="DIR", help="profile the web and the worker")
    add_common_args(parser)
    args = parser.parse_args()
    install_signal_handlers()
    config = BenchConfig.from_args(args)
    common = _common_argv(args)
    per_figure = {name: [] for name in FIGURES}
    for name, extra in args.args:
        if name not in FIGURES:
            parser.error(f"--args: no figure {name!r}")
        per_figure[name] += shlex.split(extra)
    chosen = [n for n in FIGURES if n in args.only and n not in args.skip]
    if config.smoke and "submit" in chosen and not baseline_available():
        # a smoke run proves the harness works; a checkout without the baseline app beside it
        # can still prove that for every other figure (a real run fails instead)
        log(f"no baseline app in {BASELINE_DIR}: this smoke run skips submit")
        chosen.remove("submit")
    print(header(config), flush=True)
    started = time.monotonic()
    results: list[tuple[str, Result]] = []
    failed: list[str] = []
    with Stack(config) as stack:
        for name in chosen:
            module = FIGURES[name]
            extra = list(per_figure[name])
            if args.profile and name in PROFILED:
                extra += ["--profile", args.profile]
            fig_args = figure_args(name, module, extra, common)
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                result = module.run(config, fig_args, stack)
            except Exception:
                failed.append(name)
                stack.failed = True  # keep the logs
                log(f"{name} FAILED:\n{traceback.format_exc()}")
                continue
            log(f"== {name} done in {time.monotonic() - t0:.1f} s")
            results.append((name, result))
    print()
    for _name, result in results:
        result.print()
    print(f"(all figures in {time.monotonic() - started:.1f} s)")
    if args.json:
        tables = [t for _, r in results for t in r.tables]
        raw = {k: v for _, r in results for k, v in r.raw.items()}
        stats.dump_json(args.json, tables, raw)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def _common_argv(args: argparse.Namespace) -> list[str]:
    """The common options again, as arguments for each figure's own parser."""
    out: list[str] = []
    if args.reps is not None:
        out += ["--reps", str(args.reps)]
    if args.smoke:
        out.append("--smoke")
    for flag, value in (
        ("--web-concurrency", args.web_concurrency),
        ("--worker-processes", args.worker_processes),
        ("--worker-threads", args.worker_threads),
    ):
        if value is not None:
            out += [flag, str(value)]
    for item in args.env or []:
        out += ["--env", item]
    return out


if __name__ == "__main__":
    main()
