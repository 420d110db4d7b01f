"""The release step: create the database if it is missing and apply the yoyo migrations.

Safe to run twice and by two processes at once: on MySQL a named lock (`GET_LOCK`, released by
the server if this process dies) serialises migrators before yoyo even creates its own tables,
and yoyo's lock row guards the apply itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from yoyo import get_backend, read_migrations

from service.db import require_driver


def _migrations_dir() -> Path:
    """The yoyo migrations: `migrations/` beside the package in a checkout (or an editable
    install), `service/migrations/` inside an installed wheel. (No __init__.py: yoyo reads
    every .py file there as a migration.)"""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no migrations next to {here}")


MIGRATIONS_DIR = _migrations_dir()
LOCK_NAME = "jobrunner.migrate"
LOCK_TIMEOUT_S = 300


def _yoyo_url(database_url: str) -> str:
    """yoyo takes the same URLs, except that a MySQL URL must name mysqlclient explicitly."""
    url = make_url(database_url)
    if url.get_backend_name() in ("mysql", "mariadb"):
        url = url.set(drivername="mysql+mysqldb")
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
    return url.render_as_string(hide_password=False)


def _ensure_database(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        return
    name = url.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    server = sa.create_engine(url._replace(database=None), poolclass=sa.pool.NullPool)
    try:
        with server.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.exec_driver_sql(
                f"CREATE DATABASE IF NOT EXISTS {quoted} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
    finally:
        server.dispose()


@contextmanager
def _server_lock(database_url: str) -> Iterator[None]:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        yield
        return
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            got = conn.execute(
                sa.text("SELECT GET_LOCK(:name, :timeout)"),
                {"name": LOCK_NAME, "timeout": LOCK_TIMEOUT_S},
            ).scalar()
            if got != 1:
                raise TimeoutError(f"another migration held {LOCK_NAME!r} for {LOCK_TIMEOUT_S} s")
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
    finally:
        engine.dispose()


def apply_migrations(database_url: str) -> list[str]:
    """Bring the schema up to date; return the ids of the migrations applied now."""
    require_driver(database_url)
    _ensure_database(database_url)
    with _server_lock(database_url):
        backend = get_backend(_yoyo_url(database_url))
        try:
            migrations = read_migrations(str(MIGRATIONS_DIR))
            with backend.lock(timeout=LOCK_TIMEOUT_S):
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
            return [migration.id for migration in pending]
        finally:
            backend.connection.close()


def pending_migrations(database_url: str) -> list[str]:
    """Ids of the migrations not applied yet (all of them for an empty database)."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()
