"""The database layer: engine factory, table definitions, and the error boundary.

MySQL/MariaDB (mysqlclient) in production; SQLite for the embedded trial mode. The schema
itself is created by the yoyo migrations in `migrations/`; the tables here mirror it for
SQLAlchemy Core, indexes included (tests/integration/test_migrations.py holds the two
together). Times are naive UTC datetimes with microseconds.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from service.errors import DatabaseUnavailable, LockConflict, RejectedByDatabase

P = ParamSpec("P")
T = TypeVar("T")

metadata = sa.MetaData()

# BIGINT ids on MySQL; SQLite only auto-increments a column declared INTEGER PRIMARY KEY.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("argv", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("env", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_retries", sa.Integer, nullable=False),
    sa.Column("timeout", sa.Integer, nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("run_at", sa.DateTime, nullable=False),
    sa.Column("locked_at", sa.DateTime, nullable=True),
    sa.Column("locked_by", sa.String(255), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime, nullable=True),
    sa.Column("cancel_requested_at", sa.DateTime, nullable=True),
    sa.Column("started_at", sa.DateTime, nullable=True),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    sa.Column("failed_at", sa.DateTime, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # Fencing token: incremented by every claim, never reset. A worker writes only while
    # the row still carries the lease it claimed, so a stale attempt cannot overwrite a newer one.
    sa.Column("lease", sa.BigInteger, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("output", sa.LargeBinary, nullable=True),
    sa.Column("output_offset", sa.BigInteger, nullable=False),
    sa.Column("output_bytes", sa.BigInteger, nullable=False),
    # how the last attempt ended (service.states.EndReason), and the signal that ended it
    sa.Column("end_reason", sa.String(16), nullable=True),
    sa.Column("exit_signal", sa.Integer, nullable=True),
    # concurrency keys (API.md section 6; migration 0008): at most `concurrency_limit` jobs of
    # a key run at once; `held` is 1 while a queued job waits for a slot of its full key
    sa.Column("concurrency_key", sa.String(64), nullable=True),
    sa.Column("concurrency_limit", sa.Integer, nullable=True),
    sa.Column("held", sa.Integer, nullable=False, server_default="0"),
    # the schedule that created it (API.md section 7); no foreign key: its jobs outlive it
    sa.Column("schedule_id", _ID, nullable=True),
    # where to POST the event of its final state (API.md section 8); migration 0009
    sa.Column("callback_url", sa.String(2048), nullable=True),
    # the claim: a queue's waiting jobs in the order they run (service.jobs.CLAIM_CANDIDATE);
    # held jobs sit apart, behind `held`, and cost the claim nothing
    sa.Index("ix_jobs_claim", "queue", "state", "held", "priority", "run_at", "id"),
    # a key's running jobs (counted by the claim) and its held ones in the order they run
    sa.Index("ix_jobs_key", "concurrency_key", "state", "held", "priority", "run_at", "id"),
    sa.Index("ix_jobs_schedule_id", "schedule_id", "id"),
    # the sweeper: due scheduled/retrying jobs, stale running ones
    sa.Index("ix_jobs_state_run_at", "state", "run_at"),
    # GET /jobs by state, by queue, by both, in id order; retention by finished_at
    sa.Index("ix_jobs_state_id", "state", "id"),
    sa.Index("ix_jobs_queue_id", "queue", "id"),
    sa.Index("ix_jobs_queue_state_id", "queue", "state", "id"),
    sa.Index("ix_jobs_finished_at", "finished_at"),
    sa.UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # read, submit or admin (service.scopes); migration 0005
    sa.Column("scope", sa.String(16), nullable=False, server_default="admin"),
    sa.UniqueConstraint("name", name="uq_api_tokens_name"),
    sa.UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
)


workers = sa.Table(
    "workers",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # this machine's boot and pid namespace: a pid means something only within them
    sa.Column("boot", sa.String(100), nullable=False),
    sa.Column("started_ticks", sa.BigInteger, nullable=False),
    sa.Column("queues", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("last_seen_at", sa.DateTime, nullable=False),
)


#: one row per concurrency key (`key:NAME`) or capped queue (`queue:NAME`), locked by a claim
#: while it counts what runs (service.jobs): two claims never both see room
concurrency_locks = sa.Table(
    "concurrency_locks",
    metadata,
    sa.Column("name", sa.String(80), primary_key=True),
)


#: API.md section 7; `job` is the template's fields as POST /jobs takes them
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("cron", sa.String(255), nullable=True),
    sa.Column("every", sa.Integer, nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("job", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Integer, nullable=False),
    sa.Column("overlap", sa.String(8), nullable=False),
    sa.Column("next_run_at", sa.DateTime, nullable=True),
    sa.Column("last_run_at", sa.DateTime, nullable=True),
    sa.Column("last_job_id", _ID, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("name", name="uq_schedules_name"),
    sa.Index("ix_schedules_next_run_at", "next_run_at"),
)


#: the outbox of completion callbacks: one row per event and destination, written in the
#: transaction that makes a job final, its body rendered there (migration 0009)
callback_events = sa.Table(
    "callback_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),  # the webhook-id
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    # scheme://host:port of the url: concurrency is bounded per destination
    sa.Column("destination", sa.String(300), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    # pending, delivered, failed (attempts used up, 410, refused)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # fencing token of the sender that claimed the current attempt
    sa.Column("lease", sa.BigInteger, nullable=False),
    # when it is due; while an attempt is claimed: when the claim expires; once done: its end
    sa.Column("next_attempt_at", sa.DateTime, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    # the one secondary index (each ending job writes a row): due events, done ones to purge
    sa.Index("ix_callback_events_due", "state", "next_attempt_at", "destination"),
)

#: every delivery attempt of a callback event (GET /jobs/{id}/deliveries)
callback_deliveries = sa.Table(
    "callback_deliveries",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("next_attempt_at", sa.DateTime, nullable=True),
    sa.Index("ix_callback_deliveries_job", "job_id", "id"),
    sa.Index("ix_callback_deliveries_at", "at"),
)


deployment = sa.Table(
    "deployment",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

# secrets every web process of a deployment shares (the dashboard's cookie key); migration 0008
web_secrets = sa.Table(
    "web_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)


def force_index(statement: sa.Select[Any], index: str) -> sa.Select[Any]:
    """A SELECT of `jobs` that MySQL/MariaDB must run through `index` (`PRIMARY` included);
    SQLite plans it on its own."""
    for dialect in ("mysql", "mariadb"):
        statement = statement.with_hint(jobs, f"FORCE INDEX ({index})", dialect)
    return statement


def utcnow() -> dt.datetime:
    """The current time as the naive UTC datetime the database stores."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class db_now(FunctionElement[dt.datetime]):
    """The database's own clock (UTC, microseconds), for times that machines compare with each
    other: heartbeats and a worker's presence are stamped with it, and the sweeper's "older
    than a lease" is measured on it, so that no two machines' clocks are ever compared."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(db_now, "mysql")
@compiles(db_now, "mariadb")
def _db_now_mysql(element: db_now, compiler: Any, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def database_time(conn: Connection) -> dt.datetime:
    """What the database's clock says now."""
    now: dt.datetime = conn.execute(sa.select(db_now())).scalar_one()
    return now


class MissingDriver(RuntimeError):
    """DATABASE_URL names MySQL, but mysqlclient (the `mysql` extra) is not installed."""


def require_driver(database_url: str) -> None:
    """Raise MissingDriver, with a one-line message that says what to do, when the database
    of this URL needs a driver that is not installed."""
    url = make_url(database_url)
    if url.get_backend_name() not in ("mysql", "mariadb"):
        return
    try:
        import MySQLdb  # noqa: F401  (mysqlclient)
    except ImportError as exc:
        where = url.render_as_string(hide_password=True)
        raise MissingDriver(
            f"DATABASE_URL is a MySQL database ({where}), but its driver is not installed "
            f"({exc}): pip install 'http-job-runner[mysql]'; or try `jobrunner dev` (SQLite)"
        ) from None


def create_engine(
    database_url: str, *, pool_size: int = 10, max_overflow: int = 10, pre_ping: bool = True
) -> Engine:
    """An engine for MySQL/MariaDB (mysqlclient) or SQLite, set up for this service.

    `pre_ping=False` saves a round trip per transaction where a failed statement is retried
    anyway (the worker's writes): a connection found dead fails one statement, as
    DatabaseUnavailable, and the pool replaces every connection older than that failure."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _create_sqlite_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    if backend not in ("mysql", "mariadb"):
        raise ValueError(f"unsupported database {backend!r}: use mysql+mysqldb:// or sqlite://")
    require_driver(database_url)
    if "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        pool_recycle=1800,
        pool_pre_ping=pre_ping,
        # every checkout ends its transaction (commit or rollback) before the connection goes
        # back: the pool's own ROLLBACK on return would be one more round trip for nothing
        pool_reset_on_return=None,
        # Each statement sees the latest committed data: a worker's poll for a cancel flag
        # must not keep reading an old snapshot.
        isolation_level="READ COMMITTED",
        connect_args={
            "connect_timeout": 5,
            "read_timeout": 30,
            "write_timeout": 30,
            "init_command": "SET time_zone='+00:00', innodb_lock_wait_timeout=10",
        },
    )


def _create_sqlite_engine(url: sa.URL, *, pool_size: int, max_overflow: int) -> Engine:
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite, so that every transaction starts
        # with BEGIN IMMEDIATE: one writer at a time, waiting instead of failing on upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


#: MySQL/MariaDB errors that refuse a row's data, reported as OperationalError by the driver:
#: a CHECK constraint failed (MariaDB 4025, MySQL 3819: the JSON checks), invalid JSON text
#: (MySQL 3140), a string the column's character set cannot hold (1366, 1367)
DATA_REFUSED = frozenset({4025, 3819, 3140, 1366, 1367})


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()`, with driver failures turned into LockConflict (a deadlock or a lock
    wait timeout: the transaction was rolled back, run it again), RejectedByDatabase (the
    database, or the driver, refused the data: the request's fault, not an outage) or
    DatabaseUnavailable (an outage: only that is a 503)."""
    try:
        with engine.begin() as conn:
            yield conn
    except UnicodeEncodeError as exc:  # the driver met text it cannot encode (a lone surrogate)
        raise RejectedByDatabase("it holds text that is not valid Unicode") from exc
    except sa.exc.DataError as exc:  # out of range, too long, ...
        raise _refused(exc) from exc
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
        if is_lock_conflict(exc):
            raise LockConflict() from exc
        if error_code(exc) in DATA_REFUSED:
            raise _refused(exc) from exc
        raise DatabaseUnavailable() from exc


def _refused(exc: BaseException) -> RejectedByDatabase:
    return RejectedByDatabase(f"the database refused its data (error {error_code(exc)})")


def error_code(exc: BaseException) -> int | None:
    """The MySQL/MariaDB error number of a driver error, if it has one."""
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    return code if isinstance(code, int) else None


def is_lock_conflict(exc: BaseException) -> bool:
    """Deadlock (1213) or lock wait timeout (1205): a conflict, not an outage."""
    return error_code(exc) in (1205, 1213)


#: how often a transaction that met a lock conflict is run again before LockConflict escapes
CONFLICT_ATTEMPTS = 8


def _dropped(exc: DatabaseUnavailable) -> bool:
    """The connection died under the transaction (MariaDB restarted, a pooled connection
    timed out): the pool has discarded it, and a fresh one may well work at once."""
    cause = exc.__cause__
    return isinstance(cause, sa.exc.DBAPIError) and bool(cause.connection_invalidated)


def retry_conflicts(fn: Callable[P, T]) -> Callable[P, T]:
    """Run a function that is one transaction again when it fails with LockConflict.

    InnoDB rolls a deadlock's victim back whole ("try restarting transaction"), and every
    transition is a guarded UPDATE, so running it again is safe: it moves the row if it still
    may, and reports that it did not otherwise. The pauses are short and random, so that two
    victims of one deadlock do not meet again at once.
    """
    return _retrying(fn, reconnect=False)


def retry_fenced(fn: Callable[P, T]) -> Callable[P, T]:
    """`retry_conflicts`, and once more at once when the connection was found dropped: for
    a worker's fenced writes only (an attempt's end, a hand-back, its output), which change
    nothing when run twice. (A dropped connection may hide a commit that happened: run
    again, the write finds its guard failed and says so. An insert or a claim run again
    would do its work twice, so they are not retried that way.)"""
    return _retrying(fn, reconnect=True)


def _retrying(fn: Callable[P, T], *, reconnect: bool) -> Callable[P, T]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        reconnected = not reconnect
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except LockConflict:
                if attempt >= CONFLICT_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.0, 0.001 * 2**attempt))
            except DatabaseUnavailable as exc:
                if reconnected or not _dropped(exc):
                    raise
                reconnected = True

    return run
