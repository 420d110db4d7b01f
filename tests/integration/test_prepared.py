"""Statements compiled once and run as plain SQL (service.prepared): they read and write what
`Connection.execute` of the same statement does, on MariaDB and on SQLite, and their errors
are SQLAlchemy's (a dropped connection is found dropped)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import jobs
from service.config import Settings
from service.db import create_engine, force_index
from service.migrate import apply_migrations
from service.prepared import Prepared
from service.states import State
from service.web.schemas import parse_create

T = jobs.jobs
SETTINGS = Settings()
COLUMNS = (T.c.id, T.c.command, T.c.argv, T.c.env, T.c.output, T.c.run_at, T.c.started_at)
SEARCH = (
    force_index(sa.select(*COLUMNS), "ix_jobs_claim")
    .where(T.c.queue == sa.bindparam("queue"), T.c.state == State.QUEUED)
    .order_by(T.c.id)
    .limit(10)
)


@pytest.fixture(params=["mariadb", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "mariadb":
        engine: sa.Engine = request.getfixturevalue("engine")
        request.getfixturevalue("clean_db")
        yield engine
        return
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    apply_migrations(url)
    engine = create_engine(url)
    yield engine
    engine.dispose()


def create(engine: sa.Engine, **fields: object) -> int:
    given = fields if "argv" in fields else {"command": "true", **fields}
    job, created = jobs.create(engine, parse_create(given, SETTINGS))
    assert created
    return job.id


def test_a_select_returns_the_rows_and_types_of_conn_execute(db: sa.Engine) -> None:
    plain = create(db, queue="p")
    rich = create(db, queue="p", argv=["echo", "é", "x y"], env={"A": "1", "B": "two"})
    create(db, queue="other")
    with db.begin() as conn:
        conn.execute(T.update().where(T.c.id == rich).values(output=b"\x00\xffbytes"))
        expected = conn.execute(SEARCH, {"queue": "p"}).all()
        got = Prepared(SEARCH).rows(conn, {"queue": "p"})
    assert [row.id for row in got] == [plain, rich]
    assert [tuple(row) for row in got] == [tuple(row) for row in expected]
    assert got[1].argv == ["echo", "é", "x y"] and got[1].env == {"A": "1", "B": "two"}
    assert got[1].output == b"\x00\xffbytes"
    assert isinstance(got[0].run_at, dt.datetime)  # SQLite stores text: processed as SA does
    assert got[0].started_at is None


def test_an_update_writes_what_conn_execute_writes(db: sa.Engine) -> None:
    one, two = create(db, queue="u"), create(db, queue="u")
    when = dt.datetime(2026, 12, 2, 12, 30, 15, 123456)
    update = (
        T.update()
        .where(T.c.id == sa.bindparam("target"), T.c.state == State.QUEUED)
        .values(locked_by=sa.bindparam("worker"), locked_at=sa.bindparam("when"), priority=7)
    )
    with db.begin() as conn:
        moved = conn.execute(update, {"target": one, "worker": "w", "when": when}).rowcount
        prepared = Prepared(update)
        moved_too = prepared.execute(conn, {"target": two, "worker": "w", "when": when}).rowcount
        none = prepared.execute(conn, {"target": -1, "worker": "w", "when": when}).rowcount
        found = conn.execute(
            sa.select(T.c.locked_by, T.c.locked_at, T.c.priority).where(T.c.id.in_([one, two]))
        ).all()
    assert (moved, moved_too, none) == (1, 1, 0)
    assert found[0] == found[1] == ("w", when, 7)


def test_a_statement_whose_sql_changes_with_its_values_is_refused(db: sa.Engine) -> None:
    expanding = sa.select(T.c.id).where(T.c.id.in_(sa.bindparam("ids", expanding=True)))
    with db.begin() as conn, pytest.raises(ValueError, match="the same every time"):
        Prepared(expanding).rows(conn, {"ids": [1]})


def test_a_dropped_connection_fails_as_sqlalchemy_reports_it(
    engine: sa.Engine, clean_db: None
) -> None:
    """What the worker's retries rely on (service.db): a driver error is wrapped, and the
    connection found dead is invalidated, so the next transaction gets a fresh one."""
    job = create(engine, queue="d")
    statement = Prepared(sa.select(T.c.id).where(T.c.id == sa.bindparam("id")))
    with engine.connect() as conn:
        own = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
        with engine.connect() as other:
            other.exec_driver_sql(f"KILL {int(own)}")
        with pytest.raises(sa.exc.OperationalError) as failure:
            statement.rows(conn, {"id": job})
    assert failure.value.connection_invalidated
    with engine.begin() as conn:
        assert [row.id for row in statement.rows(conn, {"id": job})] == [job]
