"""Database round trips per operation of a job's life, counted at SQLAlchemy's dialect.

Not a timing: it runs the project's own functions (service.jobs / service.queries) on an engine
built like the web's and the worker's (`service.db.create_engine`: pool pre-ping, READ
COMMITTED), and counts what each sends to MariaDB: pings, statements, commits, rollbacks
(the pool's reset of a returned connection is a rollback). It explains much of the CPU and
latency per POST and per job, since every round trip costs both sides.

    .venv/bin/python -m bench.roundtrips
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench.common import Result, standalone
from bench.stack import BenchConfig, Stack, maybe_stack
from bench.stats import Table
from service import jobs, queries
from service.config import Settings
from service.db import create_engine, transaction
from service.jobs import Outcome, OutputSnapshot
from service.web.schemas import parse_create

CALLS = ("do_ping", "do_execute", "do_execute_no_params", "do_executemany", "do_commit",
         "do_rollback")  # fmt: skip


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("round trips")


def traced_engine(
    url: str, counts: Counter[str] | None = None, *, pre_ping: bool = True
) -> tuple[sa.Engine, Counter[str]]:
    """An engine like the service's whose dialect counts the calls that reach the server
    (`pre_ping=False`: like the worker's, see actors/bootstrap.py)."""
    engine = create_engine(url, pool_size=2, max_overflow=0, pre_ping=pre_ping)
    counts = Counter() if counts is None else counts
    dialect = engine.dialect
    for name in CALLS:
        original = getattr(dialect, name)

        def wrapper(*a: Any, _orig: Any = original, _name: str = name, **k: Any) -> Any:
            counts[_name] += 1
            return _orig(*a, **k)

        setattr(dialect, name, wrapper)
    return engine, counts


def run(config: BenchConfig, args: argparse.Namespace, stack: Stack | None = None) -> Result:
    table = Table(
        "Database round trips per operation (the project's functions, counted at the dialect)",
        ["operation", "pings", "statements", "commits", "rollbacks", "round trips"],
    )
    with maybe_stack(config, stack) as st:
        st.stop_worker()  # nothing else may claim the job this traces
        settings = Settings.from_environ(st.env())
        engine, counts = traced_engine(st.database_url)  # the web's
        worker_engine, _ = traced_engine(st.database_url, counts, pre_ping=False)
        try:
            for each in (engine, worker_engine):
                with transaction(each) as conn:  # open the pool's connection first
                    conn.execute(sa.text("SELECT 1"))
            spec = parse_create({"command": "true"}, settings)
            state: dict[str, Any] = {}

            def create() -> None:
                state["job"], _ = jobs.create(engine, spec)

            def claim() -> None:
                state["claimed"] = None
                while state["claimed"] is None or state["claimed"].id != state["job"].id:
                    state["claimed"] = jobs.claim_next(worker_engine, spec.queue, "bench:trace")
                    if state["claimed"] is None:
                        raise RuntimeError("nothing to claim")

            def finish() -> None:
                jobs.finish(
                    worker_engine,
                    state["claimed"],
                    Outcome(succeeded=True, exit_code=0),
                    OutputSnapshot(b"", 0),
                    settings.retry_policy,
                )

            def save_output() -> None:
                jobs.save_output(worker_engine, state["claimed"], OutputSnapshot(b"line\n", 0))

            def get() -> None:
                with transaction(engine) as conn:
                    queries.get(conn, state["job"].id)

            steps: list[tuple[str, Callable[[], None]]] = [
                ("POST /jobs: jobs.create (web; + 1 Redis message)", create),
                ("worker: jobs.claim_next", claim),
                ("worker: jobs.save_output (each second a job prints)", save_output),
                ("worker: jobs.finish", finish),
                ("GET /jobs/{id}: queries.get", get),
            ]
            total: Counter[str] = Counter()
            for name, step in steps:
                counts.clear()
                step()
                row = _row(counts)
                table.add(name, *row)
                if "save_output" not in name and "GET" not in name:
                    total.update(counts)
            table.add("a job `true`, submitted and run (create + claim + finish)", *_row(total))
        finally:
            engine.dispose()
            worker_engine.dispose()
            st.query("DELETE FROM jobs WHERE locked_by = 'bench:trace' OR id = %s",
                     (state.get("job").id if state.get("job") else 0,))  # fmt: skip
    table.notes += [
        "pings come from `pool_pre_ping=True` (service/db.py): one per connection checkout, "
        "i.e. per transaction, in the web; the worker's engine has none (actors/bootstrap.py); "
        "rollbacks would be the pool's reset of each returned connection (turned off)",
        "a round trip = ping + statement + commit + rollback, each a request/response to mariadbd",
    ]
    return Result(tables=[table])


def _row(counts: Counter[str]) -> list[int]:
    statements = counts["do_execute"] + counts["do_execute_no_params"] + counts["do_executemany"]
    pings, commits, rollbacks = counts["do_ping"], counts["do_commit"], counts["do_rollback"]
    return [pings, statements, commits, rollbacks, pings + statements + commits + rollbacks]


def main() -> None:
    standalone(__doc__.splitlines()[0], add_args, run)


if __name__ == "__main__":
    main()
