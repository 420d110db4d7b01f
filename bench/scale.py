"""Figure 6, scale: GET /jobs latency with 1,000,000 jobs, the query plans, the worker's queries.

The big table (`--rows`, 1,000,000) is filled in SQL from MariaDB's sequence engine in batches
with a fixed mix of states and queues (below), then ANALYZEd. It lives in its own database,
`jobrunner_bench_scale`, which is KEPT for reuse (filling takes a while): a later run reuses it
when it still holds exactly `--rows` jobs of this fill; `--refill` forces a new fill, `--drop`
drops it at the end. The same mix in a small table (`--small-rows`, 10,000) is the baseline:
a second web serves it, and each figure is also shown as a ratio big/small.

Per repetition and list URL, a client loop (one keep-alive connection, one request at a time,
so the latency is that of the request, not of a queue) runs `--duration` s against each web.
Then the SQL that the project's own code sends (captured from SQLAlchemy, not retyped) for the
list queries, the worker's claim, and the sweeper's queries, with EXPLAIN, and ANALYZE (it runs
the statement: rows actually read, and the time) on the big table. Then figure 6b
(bench/scale_keys.py): the claim of other queues beside one full concurrency key with
`--key-jobs` (10,000) waiting jobs.

    .venv/bin/python -m bench.scale [--rows 1000000] [--duration 5] [--refill] [--drop]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench import scale_keys
from bench import stack as stack_mod
from bench.client import Api
from bench.common import Result, log, standalone
from bench.stack import BenchConfig, Role, Stack
from bench.stats import Table, cell, percentile
from service import jobs as jobs_mod
from service import queries
from service.db import create_engine, utcnow
from service.queries import ListFilter

BIG_DB = "jobrunner_bench_scale"
BATCH = 100_000
FILL_VERSION = "bench-fill-v2"

#: state: the oldest 97 % of the jobs are final (by r = CRC32(seq) % 1000: 92.8 % succeeded,
#: 5.2 % failed, 2 % cancelled); the newest 3 % are not (50 % queued, 16.7 % running, 16.6 %
#: scheduled with run_at ahead, 16.7 % retrying with run_at ahead), as in a live system where
#: waiting and running jobs are the recent ones. Overall: 90 % succeeded, 5 % failed, 2 %
#: cancelled, 1.5 % queued, 0.5 % each running, scheduled, retrying.
STATE = """CASE WHEN seq <= {old_until} THEN
    CASE WHEN r < 928 THEN 'succeeded' WHEN r < 980 THEN 'failed' ELSE 'cancelled' END
  ELSE
    CASE WHEN r < 500 THEN 'queued' WHEN r < 667 THEN 'running' WHEN r < 833 THEN 'scheduled'
    ELSE 'retrying' END
  END"""
#: queue by q = CRC32(CONCAT('q', seq)) % 100: 70 % default, 20 % ci, 8 % deploy, 2 % reports
QUEUE = """CASE WHEN q < 70 THEN 'default' WHEN q < 90 THEN 'ci' WHEN q < 98 THEN 'deploy'
  ELSE 'reports' END"""

FILL = """
INSERT INTO jobs (command, queue, priority, state, attempts, max_retries, timeout, exit_code,
  last_error, run_at, locked_at, locked_by, heartbeat_at, started_at, finished_at, failed_at,
  created_at, updated_at, lease, idempotency_key, output, output_offset, output_bytes)
SELECT command, queue, priority, state, ran, 0, 3600,
  CASE state WHEN 'succeeded' THEN 0 WHEN 'failed' THEN 1 WHEN 'retrying' THEN 1 END,
  CASE state WHEN 'failed' THEN 'exit status 1' WHEN 'retrying' THEN 'exit status 1'
    WHEN 'cancelled' THEN 'cancelled' END,
  CASE state WHEN 'scheduled' THEN NOW(6) + INTERVAL 1 DAY
    WHEN 'retrying' THEN NOW(6) + INTERVAL 1 HOUR ELSE created END,
  IF(ran, created + INTERVAL 1 SECOND, NULL), IF(ran, 'bench:1', NULL),
  IF(state = 'running', NOW(6), NULL),
  IF(ran, created + INTERVAL 1 SECOND, NULL),
  IF(ran AND state <> 'running' AND state <> 'retrying', created + INTERVAL 3 SECOND, NULL),
  IF(state = 'failed', created + INTERVAL 3 SECOND, NULL),
  created, created + INTERVAL 3 SECOND, ran, NULL,
  IF(ran, CONCAT('job ', seq, ' done', CHAR(10)), NULL), 0,
  IF(ran, LENGTH(CONCAT('job ', seq, ' done', CHAR(10))), 0)
FROM (
  SELECT seq, state, CONCAT('bin/task.sh ', seq % 100) AS command,
    CASE WHEN p < 80 THEN 0 WHEN p < 90 THEN 10 ELSE -5 END AS priority,
    state NOT IN ('queued', 'scheduled') AND NOT (state = 'cancelled' AND r % 2 = 0) AS ran,
    {queue} AS queue,
    TIMESTAMP('{start}') + INTERVAL (seq * {spread}) MICROSECOND AS created
  FROM (
    SELECT seq, r, q, p, {state} AS state
    FROM (
      SELECT seq, CRC32(seq) % 1000 AS r, CRC32(CONCAT('q', seq)) % 100 AS q,
        CRC32(CONCAT('p', seq)) % 100 AS p
      FROM seq_{lo}_to_{hi}
    ) AS s0
  ) AS s1
) AS s2
"""


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale")
    group.add_argument("--rows", type=int, default=None, help="big table rows (1,000,000)")
    group.add_argument("--small-rows", type=int, default=None, help="baseline rows (10,000)")
    group.add_argument("--duration", type=float, default=None, help="seconds per URL (5)")
    group.add_argument("--requests", type=int, default=5000, help="max requests per URL (5000)")
    group.add_argument("--refill", action="store_true", help="fill the big table again")
    group.add_argument("--drop", action="store_true", help="drop the big database at the end")
    group.add_argument("--analyze-runs", type=int, default=None, help="timed runs per query (20)")
    group.add_argument(
        "--key-jobs", type=int, default=None, help="waiting jobs of one full key (10,000)"
    )


# --- the fill -----------------------------------------------------------------------------


def fill(st: Stack, rows: int) -> float:
    """Empty the jobs table and fill it with `rows` jobs of the mix; seconds taken."""
    started = time.monotonic()
    st.query("TRUNCATE TABLE jobs")
    spread = max(1, int(30 * 86400 * 1e6 / rows))  # created_at over 30 days, in id order
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 31 * 86400))
    for lo in range(1, rows + 1, BATCH):
        hi = min(rows, lo + BATCH - 1)
        state = STATE.format(old_until=int(rows * 0.97))
        st.query(FILL.format(state=state, queue=QUEUE, start=start, spread=spread, lo=lo, hi=hi))
    st.query("ANALYZE TABLE jobs")
    st.query(f"ALTER TABLE jobs COMMENT = '{FILL_VERSION} rows={rows}'")
    return time.monotonic() - started


def filled_with(st: Stack) -> int | None:
    """Rows of a complete earlier fill of this table, if it is one."""
    comment = st.query(
        "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
        " AND TABLE_NAME = 'jobs'",
        (st.config.database,),
    )
    if not comment or not comment[0][0].startswith(FILL_VERSION):
        return None
    rows = int(comment[0][0].rsplit("=", 1)[1])
    return rows if int(st.query("SELECT COUNT(*) FROM jobs")[0][0]) == rows else None


def mix(st: Stack) -> str:
    states = st.query("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY 2 DESC")
    queues = st.query("SELECT queue, COUNT(*) FROM jobs GROUP BY queue ORDER BY 2 DESC")
    return (
        "states: " + ", ".join(f"{s} {n}" for s, n in states)
        + "; queues: " + ", ".join(f"{q} {n}" for q, n in queues)
    )  # fmt: skip


# --- the SQL of the project's own code ----------------------------------------------------


class _Captured(Exception):
    """Raised to stop a write before it runs, once its SELECT has been captured."""


@dataclasses.dataclass
class Statement:
    name: str
    sql: str
    params: Any


def capture(
    url: str, name: str, call: Callable[[sa.Engine], Any], stop_at_write: bool
) -> list[Statement]:
    """Run `call(engine)` and record every statement it sends; with `stop_at_write`, abort
    (rolling back) at its first UPDATE/INSERT/DELETE, so nothing is changed."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    found: list[Statement] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(
        _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool
    ) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if stop_at_write and verb in ("UPDATE", "INSERT", "DELETE"):
            raise _Captured()
        if verb == "SELECT" and statement.strip() != "SELECT 1":
            found.append(Statement(name, statement, params))

    try:
        call(engine)
    except _Captured:
        pass
    finally:
        engine.dispose()
    return found


def project_statements(url: str) -> list[Statement]:
    """The list queries of GET /jobs, the claim, and the sweeper's reads, as the code sends them."""
    out: list[Statement] = []

    def lister(where: ListFilter) -> Callable[[sa.Engine], Any]:
        def call(engine: sa.Engine) -> Any:
            with engine.connect() as conn:
                return queries.list_jobs(conn, where)

        return call

    for name, where in list_filters(None).items():
        out += capture(url, f"list {name}", lister(where), stop_at_write=True)
    out += capture(
        url,
        "claim (worker)",
        lambda e: jobs_mod.claim_next(e, "default", "bench:explain"),
        stop_at_write=True,
    )
    out += capture(url, "sweeper promote_due", jobs_mod.promote_due, stop_at_write=True)

    def sweeper_reads(engine: sa.Engine) -> None:
        with engine.connect() as conn:
            queries.stuck_queues(conn, utcnow())
            queries.waiting_queues(conn)
            queries.queue_stats(conn, utcnow())

    names = ("sweeper stuck_queues", "waiting_queues", "GET /queues (queue_stats)")
    for i, stmt in enumerate(capture(url, "", sweeper_reads, stop_at_write=True)):
        stmt.name = names[i]
        out.append(stmt)

    def dashboard_reads(engine: sa.Engine) -> None:
        with engine.connect() as conn:
            queries.capped_counts(conn, None)
            queries.search_jobs(conn, ListFilter(limit=50, descending=True), "task.sh 42")

    for i, stmt in enumerate(capture(url, "", dashboard_reads, stop_at_write=True)):
        stmt.name = ("/ui/jobs counts", "/ui/jobs search: id range", "/ui/jobs search")[i]
        out.append(stmt)
    return out


def explain(st: Stack, statements: list[Statement], runs: int) -> tuple[Table, Table]:
    conn = stack_mod.mysql(st.config.database)
    plans = Table(
        "6. EXPLAIN / ANALYZE of the project's queries on the big table",
        ["query", "id", "type", "key", "rows (est.)", "r_rows (read)", "r_filtered", "Extra"],
    )
    timing = Table(
        f"6. The same queries timed in SQL on the big table ({runs} runs each; ms)",
        ["query", "p50", "max", "result rows"],
    )
    try:
        cursor = conn.cursor()
        for stmt in statements:
            cursor.execute("BEGIN")
            cursor.execute("ANALYZE " + stmt.sql, stmt.params)
            names = [d[0] for d in cursor.description]
            for row in cursor.fetchall():
                rec = dict(zip(names, row, strict=True))
                plans.add(
                    stmt.name, rec.get("id"), rec.get("type"), rec.get("key"), rec.get("rows"),
                    rec.get("r_rows"), rec.get("r_filtered"), rec.get("Extra") or "",
                )  # fmt: skip
            cursor.execute("ROLLBACK")
            times, count = [], 0
            for _ in range(runs):
                cursor.execute("BEGIN")
                t0 = time.perf_counter()
                cursor.execute(stmt.sql, stmt.params)
                count = len(cursor.fetchall())
                times.append((time.perf_counter() - t0) * 1000)
                cursor.execute("ROLLBACK")
            timing.add(stmt.name, f"{percentile(times, 50):.2f}", f"{max(times):.2f}", count)
        plans.notes.append(
            "the SQL, as captured from SQLAlchemy (the 22 columns of a job in the list "
            "queries shown as <job columns>):"
        )
        for stmt in statements:
            text = " ".join(stmt.sql.split())
            head, sep, rest = text.partition(" FROM ")
            if head.count(",") >= 20:
                text = f"SELECT <job columns>{sep}{rest}"
            params = tuple(getattr(p, "value", p) for p in stmt.params)
            plans.notes.append(f"`{stmt.name}`: `{text}` {params}")
    finally:
        conn.close()
    return plans, timing


# --- the HTTP figures ---------------------------------------------------------------------


def list_filters(deep_after: int | None) -> dict[str, ListFilter]:
    filters = {
        "limit=100": ListFilter(limit=100),
        "order=desc": ListFilter(limit=100, descending=True),
        "state=queued": ListFilter(state="queued", limit=100),
        "state=failed": ListFilter(state="failed", limit=100),
        "state=running&order=desc": ListFilter(state="running", limit=100, descending=True),
        "queue=ci": ListFilter(queue="ci", limit=100),
        "queue=reports&order=desc": ListFilter(queue="reports", limit=100, descending=True),
        "state=failed&queue=deploy": ListFilter(state="failed", queue="deploy", limit=100),
        "state=succeeded&queue=reports&order=desc": ListFilter(
            state="succeeded", queue="reports", limit=100, descending=True
        ),
    }
    if deep_after is not None:
        filters["after=90%"] = ListFilter(after=deep_after, limit=100)
    return filters


def url_of(name: str, where: ListFilter) -> str:
    params = [f"limit={where.limit}"]
    if where.state:
        params.append(f"state={where.state}")
    if where.queue:
        params.append(f"queue={where.queue}")
    if where.after is not None:
        params.append(f"after={where.after}")
    if where.descending:
        params.append("order=desc")
    return "/jobs?" + "&".join(params)


def time_requests(url: str, path: str, token: str, duration: float, limit: int) -> list[float]:
    """GET `path` one request at a time for `duration` s (at most `limit` requests); ms each."""
    api = Api(url, token)
    latencies: list[float] = []
    try:
        api.request("GET", path)  # connect, and warm this query's pages
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and len(latencies) < limit:
            t0 = time.perf_counter()
            reply = api.request("GET", path)
            latencies.append((time.perf_counter() - t0) * 1000)
            if reply.status != 200:
                raise RuntimeError(f"GET {path} answered {reply.status}: {reply.body[:200]!r}")
    finally:
        api.close()
    return latencies


#: the overview endpoints (API.md section 11), and the dashboard's pages (section 12: the
#: jobs list renders in under 50 ms at 1,000,000 rows; they take a bearer token as well as a
#: session), measured beside the lists
OVERVIEW_PATHS = {
    "GET /queues": "/queues",
    "GET /workers": "/workers",
    "page /ui/jobs": "/ui/jobs",
    "page /ui/jobs?state=failed": "/ui/jobs?state=failed",
    "page /ui/jobs?queue=reports&state=succeeded": "/ui/jobs?queue=reports&state=succeeded",
    "page /ui/jobs?q=task.sh 42 (search)": "/ui/jobs?q=task.sh+42",
    "page /ui/jobs/{id} (the newest job)": "/ui/jobs/{id}",
    "page /ui/queues": "/ui/queues",
}


def measure_lists(
    webs: dict[str, tuple[Role, int]], duration: float, limit: int, token: str, rep: int
) -> dict[str, dict[str, list[float]]]:
    """Each list URL (and the overview endpoints) against each web (alternating which goes
    first); latencies in ms."""
    out: dict[str, dict[str, list[float]]] = {}
    for name in [*list_filters(0), *OVERVIEW_PATHS]:
        out[name] = {}
        order = list(webs) if rep % 2 == 0 else list(reversed(webs))
        for which in order:
            role, max_id = webs[which]
            if name in OVERVIEW_PATHS:
                path = OVERVIEW_PATHS[name].replace("{id}", str(max_id))  # the newest job
            else:
                path = url_of(name, list_filters(int(max_id * 0.9))[name])
            out[name][which] = time_requests(role.url, path, token, duration, limit)
    return out


def run(config: BenchConfig, args: argparse.Namespace, stack: Stack | None = None) -> Result:
    rows = args.rows or (2_000 if config.smoke else 1_000_000)
    small_rows = args.small_rows or (200 if config.smoke else 10_000)
    duration = args.duration or (0.1 if config.smoke else 5.0)
    runs = args.analyze_runs or (3 if config.smoke else 20)
    result = Result()
    big_config = dataclasses.replace(
        config, database=BIG_DB if not config.smoke else BIG_DB + "_smoke",
        namespace=config.namespace + "_scale",
    )  # fmt: skip
    small_config = dataclasses.replace(
        config, database=config.database + "_small", namespace=config.namespace + "_small"
    )
    keep = not args.drop and not config.smoke
    notes: list[str] = []
    # neither table is the shared stack's: its worker may keep running meanwhile
    with (
        Stack(small_config) as small,
        Stack(big_config, fresh=args.refill, keep_database=keep) as big,
    ):
        log(f"scale: filling the small table ({small_rows} rows)")
        fill(small, small_rows)
        if filled_with(big) == rows and not args.refill:
            notes.append(
                f"big table reused from an earlier fill ({rows} rows, {big_config.database})"
            )
        else:
            log(f"scale: filling the big table ({rows} rows; kept for reuse)")
            seconds = fill(big, rows)
            notes.append(f"big table filled in {seconds:.1f} s ({rows} rows)")
        notes.append("big: " + mix(big))
        webs = {
            "small": (small.start_web(), small.max_job_id()),
            "big": (big.start_web(), big.max_job_id()),
        }
        reps = []
        for rep in range(config.reps):
            log(f"scale rep {rep + 1}/{config.reps}: {len(list_filters(0))} URLs x 2 tables")
            reps.append(measure_lists(webs, duration, args.requests, config.token, rep))
        plans, timing = explain(big, project_statements(big.database_url), runs)
    table = Table(
        f"6. GET /jobs, /queues, /workers latency, {rows} vs {small_rows} rows (one request "
        f"at a time, {duration:g} s per URL; ms; median [min-max] over {len(reps)} reps)",
        ["query", "big p50", "big p99", "big req/s", "small p50", "small p99",
         "ratio p50 big/small"],
    )  # fmt: skip
    for name in reps[0]:
        bigs = [r[name]["big"] for r in reps]
        smalls = [r[name]["small"] for r in reps]
        big50 = [percentile(x, 50) for x in bigs]
        small50 = [percentile(x, 50) for x in smalls]
        table.add(
            name,
            cell(big50, 2),
            cell([percentile(x, 99) for x in bigs], 2),
            cell([len(x) / duration for x in bigs]),
            cell(small50, 2),
            cell([percentile(x, 99) for x in smalls], 2),
            cell([b / s for b, s in zip(big50, small50, strict=True)], 2),
        )
    table.notes += notes
    table.notes.append("after=90%: the page after the id at 90 % of the table (a deep page)")
    key_jobs = args.key_jobs or (200 if config.smoke else 10_000)
    log(f"scale: claims beside a full key with {key_jobs} waiting jobs")
    keys = scale_keys.measure(key_jobs, 50 if config.smoke else 500, config.reps)
    result.tables = [table, plans, timing, keys]
    result.raw["scale"] = reps
    return result


def main() -> None:
    standalone(__doc__.splitlines()[0], add_args, run)


if __name__ == "__main__":
    main()
