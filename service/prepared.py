"""The worker's hottest statements, compiled once and run as plain SQL.

`Connection.execute(statement)` does some work again on every execution: it looks the compiled
form up by the statement's cache key, builds the parameters from the compiled binds, and sets
up the result from the compiled columns. The three statements that every batch of ends runs
(the next claims' search and UPDATE, the UPDATE of the ends) run here instead: a batch of 4
ends took 2.40 million instructions before, 1.84 million with them (-23%; callgrind, 400
batches against MariaDB).

`Prepared` compiles its Core statement once for each dialect, and runs the SQL with
`Connection.exec_driver_sql`, which keeps what matters of SQLAlchemy: the transaction, the
wrapping of driver errors and the invalidation of a dropped connection. The statement stays
the one definition: the SQL, the order of its parameters, the values fixed in it and the type
processors of its binds and columns all come from its compiled form, so a value goes in, and a
row comes out, as `Connection.execute` would pass and return it.
"""

from __future__ import annotations

import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Dialect

#: a type's conversion of one value, to the driver (bind) or from it (result)
Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class _Form:
    """The statement compiled for one dialect."""

    sql: str
    #: the bind name of each parameter, in the order the SQL takes them (positional styles)
    names: tuple[str, ...]
    positional: bool
    #: the values fixed in the statement (a literal compared with a column, say)
    fixed: Mapping[str, Any]
    #: the bind processor of each parameter that has one
    binds: Mapping[str, Converter]
    #: for a SELECT: the row type, and the result processor of each column that has one
    row: type | None
    results: tuple[tuple[int, Converter], ...]


class Prepared:
    """A Core statement run through `exec_driver_sql` (see the module docstring)."""

    def __init__(self, statement: sa.Executable) -> None:
        self.statement = statement
        #: by dialect (an engine's own): not kept alive by this once its engine is gone
        self._forms: weakref.WeakKeyDictionary[Dialect, _Form] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> CursorResult[Any]:
        """Run it with `params` (by bind name, as `conn.execute` takes them)."""
        form = self._form(conn.dialect)
        values = {**form.fixed, **params}
        for name, process in form.binds.items():
            values[name] = process(values[name])
        if form.positional:
            return conn.exec_driver_sql(form.sql, tuple(values[name] for name in form.names))
        return conn.exec_driver_sql(form.sql, values)

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run a SELECT: every row, its values processed as `conn.execute` would, each column
        by its name (`row.id`)."""
        form = self._form(conn.dialect)
        assert form.row is not None, "rows() of a statement that selects nothing"
        make, results = form.row, form.results
        fetched = self.execute(conn, params).all()
        if not results:
            return [make(*raw) for raw in fetched]
        rows = []
        for raw in fetched:
            values = list(raw)
            for index, process in results:
                values[index] = process(values[index])
            rows.append(make(*values))
        return rows

    def _form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect)
        if form is None:
            with self._lock:
                form = self._forms.get(dialect) or _compile(self.statement, dialect)
                self._forms[dialect] = form
        return form


def _compile(statement: sa.Executable, dialect: Dialect) -> _Form:
    compiled: Any = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    if compiled.literal_execute_params or compiled.post_compile_params:
        # an "expanding" IN list or a literal rendered per execution: not a fixed SQL text
        raise ValueError("Prepared takes only statements whose SQL is the same every time")
    binds = compiled.binds
    fixed = {
        name: bind.effective_value
        for name, bind in binds.items()
        if not bind.required and bind.callable is None
    }
    processors = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for name, bind in binds.items()
    }
    row: type | None = None
    results: tuple[tuple[int, Converter], ...] = ()
    columns: Sequence[Any] = getattr(statement, "selected_columns", ())
    if columns:
        row = namedtuple("Row", [column.key for column in columns])  # type: ignore[misc,no-redef]
        processors_of_columns = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        results = tuple(
            (index, process)
            for index, process in enumerate(processors_of_columns)
            if process is not None
        )
    return _Form(
        sql=compiled.string,
        names=tuple(compiled.positiontup or ()),
        positional=bool(compiled.positional),
        fixed=fixed,
        binds={name: process for name, process in processors.items() if process is not None},
        row=row,
        results=results,
    )
