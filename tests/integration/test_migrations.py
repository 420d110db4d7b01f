"""The migrations and the SQLAlchemy tables describe the same schema, on MariaDB and SQLite.

The schema is created by the yoyo migrations (migrations/); the code reads and writes it
through the tables of service.db. Applied to an empty database, the migrations must give
exactly those tables: the same columns, nullability, types (by family), primary keys,
indexes and unique constraints. Run twice, they change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.db import metadata
from service.migrate import apply_migrations
from tests.conftest import MYSQL_SERVER

SCHEMA_TABLES = sorted(metadata.tables)


@pytest.fixture(params=["mariadb", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
        return
    name = f"jobrunner_migrations_{uuid.uuid4().hex[:8]}"
    yield f"{MYSQL_SERVER}/{name}"
    server = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    server.dispose()


def family(column_type: sa.types.TypeEngine, sqlite: bool) -> str:
    """A column type as the schema means it, whatever name each database gives it (SQLite
    keeps no string lengths: a string is text there)."""
    for kind, name in (
        (sa.JSON, "text"),  # MariaDB's JSON is LONGTEXT with a check, SQLite's is TEXT
        (sa.DateTime, "datetime"),
        (sa.LargeBinary, "blob"),
        (sa.Integer, "integer"),
    ):
        if isinstance(column_type, kind):
            return name
    if isinstance(column_type, sa.String):
        length = getattr(column_type, "length", None)
        if length and not sqlite and not isinstance(column_type, sa.Text):
            return f"string({length})"
        return "text"
    name = type(column_type).__name__.lower()
    if "blob" in name:
        return "blob"
    if "text" in name:
        return "text"
    raise AssertionError(f"a column type the test does not know: {column_type!r}")


def described(inspector: sa.Inspector, table: str) -> dict[str, object]:
    sqlite = inspector.dialect.name == "sqlite"
    key = tuple(inspector.get_pk_constraint(table)["constrained_columns"])
    columns = {
        c["name"]: (family(c["type"], sqlite), c["nullable"] and c["name"] not in key)
        for c in inspector.get_columns(table)
    }
    indexes = {
        (i["name"], tuple(i["column_names"]), bool(i["unique"]))
        for i in inspector.get_indexes(table)
    }
    uniques = {
        (u["name"], tuple(u["column_names"]), True) for u in inspector.get_unique_constraints(table)
    }
    # MySQL reports a unique key as an index, SQLite as either: count each once
    return {"columns": columns, "primary key": key, "indexes": indexes | uniques}


def declared(table: sa.Table, sqlite: bool) -> dict[str, object]:
    key = tuple(c.name for c in table.primary_key.columns)
    columns = {
        c.name: (family(c.type, sqlite), bool(c.nullable) and c.name not in key)
        for c in table.columns
    }
    indexes = {(i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes}
    indexes |= {
        (u.name, tuple(c.name for c in u.columns), True)
        for u in table.constraints
        if isinstance(u, sa.UniqueConstraint)
    }
    return {"columns": columns, "primary key": key, "indexes": indexes}


def test_migrations_create_the_schema_the_code_uses(empty_database: str) -> None:
    apply_migrations(empty_database)
    engine = sa.create_engine(empty_database, poolclass=sa.pool.NullPool)
    try:
        inspector = sa.inspect(engine)
        assert set(SCHEMA_TABLES) <= set(inspector.get_table_names())
        for name in SCHEMA_TABLES:
            sqlite = engine.dialect.name == "sqlite"
            assert described(inspector, name) == declared(metadata.tables[name], sqlite), name
        assert apply_migrations(empty_database) == []  # nothing left to apply
    finally:
        engine.dispose()
