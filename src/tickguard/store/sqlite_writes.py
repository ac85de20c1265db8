"""The journal's hot writes on SQLite, compiled once by SQLAlchemy and executed on the driver's connection.

Why: an exit's journal writes (its event, the trade's snapshot and legs, the order row) sit between the tick that
fired it and the order on the wire, and SQLAlchemy's per-execution bookkeeping (execution context, result object,
events) cost about 0.1 ms a statement - most of the journal's share of an exit's latency (bench/wire_to_wire.py).
The statement is still SQLAlchemy's: compiled for the connection's dialect with the parameter names a call
uses, and every value passes through the column's own bind processor (``Exact``'s exactness check, JSON's
serializer), so what is written is byte for byte what ``Connection.execute`` would write.  Only the execution
is the driver's (``sqlite3``: a few microseconds).  PostgreSQL keeps SQLAlchemy's path.

The transactions are the driver's too (``SqliteWrites.begin`` / ``ready`` / ``commit`` / ``rollback``): SQLAlchemy's
commit bookkeeping (transaction objects, events) and its begin after every commit cost ~0.1 ms of every exit between its
tick and the wire - cold code, every time (bench/exit_path.py).  The driver runs in autocommit mode
(``isolation_level = None``, see ``journal_open.sqlite_engine``), so a write outside a transaction would commit on
its own: every write of the connection, SQLAlchemy's path included, goes through ``begin`` first, and only
``commit`` / ``rollback`` end a transaction.  SQLAlchemy is kept inside a transaction of its own whenever the driver
is (begun once, and again only after a rollback: the driver's COMMIT does not end it) - out of one, SQLAlchemy
answers a statement that fails on its path with a ROLLBACK of its own, which would take the journal's transaction
with it unnoticed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

Params = dict[str, Any]
BUSY_TIMEOUT_MS = 5000  # how long a statement waits for another connection's lock (the journal's PRAGMA busy_timeout)


class _Prepared:
    __slots__ = ("absent", "defaults", "names", "not_null", "plan", "processors", "sql", "supported")

    def __init__(self, stmt: sa.Executable, dialect: sa.Dialect, keys: Sequence[str]) -> None:
        # An INSERT's columns the call leaves out take their scalar defaults, as SQLAlchemy's execution gives
        # them; a default of another kind (a function, a sequence) is left to SQLAlchemy's path.
        self.defaults: Params = {}
        self.supported = True
        if isinstance(stmt, sa.Insert):
            for column in stmt.table.columns:
                if column.key in keys or column.default is None:
                    continue
                if getattr(column.default, "is_scalar", False):
                    self.defaults[column.key] = column.default.arg
                else:
                    self.supported = False
        compiled = stmt.compile(dialect=dialect, column_keys=[*keys, *self.defaults])  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.names: list[str] = list(compiled.positiontup or ())
        # SQLAlchemy's own per-column bind processors (a private attribute: tests/store/test_sqlite_writes.py
        # compares the rows written both ways, so an upgrade that changes it fails there, not in production)
        self.processors: dict[str, Callable[[Any], Any]] = dict(compiled._bind_processors)
        unknown = [n for n in self.names if n not in keys and n not in self.defaults]
        self.supported = self.supported and not unknown
        # each parameter with its processor (None: the value as it is), looked up once, not per row
        self.plan: list[tuple[str, Callable[[Any], Any] | None]] = [(n, self.processors.get(n)) for n in self.names]
        # the values a NOT NULL column takes (by position, with its name): a deferred write is checked when bound,
        # where SQLite would refuse it only when it runs - after the exit's send (``SqliteWrites.defer``)
        table = getattr(stmt, "table", None)
        columns = table.c if table is not None else {}
        self.not_null: list[tuple[int, str]] = [
            (i, f"{table.name}.{n}") for i, n in enumerate(self.names)  # type: ignore[union-attr]
            if (column := columns.get(n)) is not None and not column.nullable]
        # an INSERT's NOT NULL columns the call leaves out, with no default of any kind: SQLite would store NULL
        self.absent: list[str] = [
            f"{table.name}.{c.key}" for c in (table.columns if isinstance(stmt, sa.Insert) else ())  # type: ignore[union-attr]
            if c.key not in keys and c.key not in self.defaults and not c.nullable and c.default is None
            and c.server_default is None and not c.primary_key]

    def row(self, params: Params) -> tuple[Any, ...]:
        values = {**self.defaults, **params} if self.defaults else params
        return tuple([values[n] if p is None else p(values[n]) for n, p in self.plan])


def _as_sqlalchemys(stmt: sa.Executable, params: Any, exc: sqlite3.Error) -> sa.exc.DBAPIError:
    """A driver error as SQLAlchemy raises it (the journal maps SQLAlchemy's errors to its own)."""
    return sa.exc.DBAPIError.instance(str(stmt), params, exc, sqlite3.Error)


_I64 = 2**63


def _bindable(prepared: _Prepared, row: tuple[Any, ...]) -> None:
    """What SQLite would refuse of a deferred row, refused now - when it is bound, before any exit's record: a NOT
    NULL column left out or bound to None, text the driver cannot encode (a lone surrogate), an integer past 64
    bits.  Its key and foreign keys are the executor's to keep (store/exit_log.py)."""
    problem = f"NOT NULL constraint failed: {prepared.absent[0]}" if prepared.absent else None
    for i, name in prepared.not_null:
        if row[i] is None:
            problem = f"NOT NULL constraint failed: {name}"
    for value in row:
        kind = type(value)
        if kind is str and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                problem = f"a text value cannot be stored ({exc})"
        elif kind is int and not -_I64 <= value < _I64:
            problem = f"an integer does not fit in 64 bits ({value})"
    if problem is not None:
        exc = sqlite3.IntegrityError(problem)
        raise _as_sqlalchemys(prepared.sql, row, exc) from exc


class SqliteWrites:
    """The transactions of one SQLAlchemy connection on SQLite, on its driver; prepared statements per (statement,
    parameter names), and their execution there."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._dialect = conn.dialect
        self._prepared: dict[tuple[int, tuple[str, ...]], _Prepared] = {}
        # the writes of the open transaction as the driver ran them (sql, values), kept while the journal has an
        # exit log (store/exit_log.py); None: not kept
        self.ops: list[tuple[str, Any]] | None = None
        # writes bound but not run yet (``defer``): run, in order, before any other statement of the connection
        self.deferred: list[tuple[str, Any]] = []
        # take SQLite's write lock when a transaction begins (``ready``), not at its first write: set with an exit
        # log, whose exits run no statement that would take it before their record (store/exit_log.py)
        self.immediate = False
        self.locked = False  # the open transaction holds the write lock (a write ran in it, or it began IMMEDIATE)
        # the journal read its fence since this transaction took the lock: no other engine can have written its
        # token since (that write needs the lock), so an exit of this transaction need not read it again
        self.fenced = False
        self._dbapi: sqlite3.Connection | None = None

    def driver(self) -> sqlite3.Connection:
        """The driver's connection (the exit log's writes use it too: store/exit_log.py); kept, not looked up
        through SQLAlchemy's pool each time (~20 us cold, on an exit's path), until a rollback."""
        if self._dbapi is None:
            self._dbapi = self._conn.connection.driver_connection  # type: ignore[assignment]
        return self._dbapi  # type: ignore[return-value]

    def unlock(self) -> None:
        self.locked = self.fenced = False

    def begin(self, stmt: sa.Executable, params: Any) -> sqlite3.Connection:
        """The driver's connection inside a transaction (its BEGIN if none is open; SQLAlchemy's connection inside
        one too), for a write of ``stmt``: a driver error (a BEGIN refused) is raised as SQLAlchemy's, as the
        write's own would be."""
        try:
            if not self._conn.in_transaction():
                self._conn.begin()  # the begin listener issues the driver's BEGIN (if none is open)
            con = self.driver()
            if not con.in_transaction:
                self.unlock()  # whatever ended the last one (SQLite rolls back by itself on some errors)
                con.execute("BEGIN")
            return con
        except sqlite3.Error as exc:
            raise _as_sqlalchemys(stmt, params, exc) from exc

    def in_transaction(self) -> bool:
        return self.driver().in_transaction

    def ready(self) -> bool:
        """Begin the next transaction now, if none is open: the journal calls it after a commit and its hooks (the
        sends), so that the next write - an exit's order row, between a crossing and the wire - finds it begun
        (~40 us of cold code there, bench/exit_path.py).  A deferred BEGIN takes no lock and no snapshot until its
        first statement: an open one blocks neither other readers nor the WAL checkpoint.  A BEGIN refused here
        is left to ``begin``, where the write that needs it raises it.

        ``immediate``: the write lock too, now (off the exit's path: an exit's deferred writes would take it between
        the crossing and the wire).  Held until the transaction ends; another writer waits for it - there is none
        while an engine runs, except one taking the journal over, whose token must wait for this engine's open
        transaction (engine_lock.Fence).  If the lock is taken elsewhere right now, a deferred BEGIN without waiting.
        Returns whether this call took the write lock."""
        try:
            con = self.driver()
            if con.in_transaction:
                return False
            if self.immediate:
                con.execute("PRAGMA busy_timeout=0")
                try:
                    con.execute("BEGIN IMMEDIATE")
                    self.locked = True
                    return True
                except sqlite3.OperationalError:
                    pass
                finally:
                    con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            con.execute("BEGIN")
        except sqlite3.Error:
            pass
        return False

    def rollback_read(self) -> None:
        """End a transaction that wrote nothing (a read's snapshot with it); the journal begins the next (``ready``).
        Rolled back, not committed: a write that failed part-way (rows of an ``executemany`` before the one refused)
        may have left rows in it that the journal never counted - and never checked against its fence."""
        self.driver().rollback()
        self.unlock()

    def scalar(self, sql: str) -> Any:
        """The first column of the first row of ``sql`` (a constant statement: the driver caches it), inside the
        open transaction."""
        row = self.driver().execute(sql).fetchone()
        return None if row is None else row[0]

    def commit(self) -> None:
        """The driver's COMMIT (its error is the driver's own)."""
        self.driver().commit()
        self.unlock()

    def rollback(self) -> None:
        """Roll the driver's transaction back, and SQLAlchemy's idea of one."""
        self.unlock()
        try:
            self.driver().rollback()
        finally:
            self._dbapi = None
            self._conn.rollback()

    def write(self, stmt: sa.Executable, params: Params | list[Params]) -> int | None:
        """``execute`` inside the transaction (begun if none is); a driver error is raised as SQLAlchemy's."""
        con = self.begin(stmt, params)
        try:
            rows = self.execute(con, stmt, params)
        except sqlite3.Error as exc:
            raise _as_sqlalchemys(stmt, params, exc) from exc
        self.locked = self.locked or rows is not None
        return rows

    def defer(self, stmt: sa.Executable, params: Params | list[Params]) -> int | None:
        """Bind ``stmt`` with ``params`` now - a value a bind processor refuses raises here, before anything - and
        run it later (``flush``): an exit's order row is in the exit log as bound, and SQLite runs it after the
        send (store/exit_log.py).  The rows it will touch (as a write of one row or ``executemany`` does), or None
        when this statement must take SQLAlchemy's path (nothing was bound)."""
        op = self.bind(stmt, params)
        if op is None:
            return None
        self.deferred.append(op)
        if self.ops is not None:
            self.ops.append(op)
        values = op[1]
        return len(values) if isinstance(values, list) else 1

    def bind(self, stmt: sa.Executable, params: Params | list[Params]) -> tuple[str, Any] | None:
        """``stmt`` bound with ``params`` - (sql, values), as ``defer`` keeps it - run nowhere and kept nowhere; a value
        SQLite would refuse raises here.  None: this statement takes SQLAlchemy's path.  (``defer``'s binding, and
        the exit rehearsal's: runtime/exit_rehearsal.py.)"""
        many = isinstance(params, list)
        prepared = self._get(stmt, params[0] if many else params)  # type: ignore[index,arg-type]
        if not prepared.supported:
            return None
        values = [prepared.row(p) for p in params] if many else prepared.row(params)  # type: ignore[union-attr,arg-type]
        for row in values if many else (values,):
            _bindable(prepared, row)
        return prepared.sql, values

    def flush(self) -> None:
        """Run the deferred writes, in order, inside the transaction (begun if none is); a driver error is raised as
        SQLAlchemy's (the writes after it are dropped: their transaction can no longer commit whole)."""
        deferred, self.deferred = self.deferred, []
        if not deferred:
            return
        con = self.begin(*deferred[0])
        for sql, values in deferred:
            try:
                if isinstance(values, list):
                    con.executemany(sql, values)
                else:
                    con.execute(sql, values)
            except (sqlite3.Error, UnicodeError, OverflowError) as exc:  # the latter two: refused while binding
                raise _as_sqlalchemys(sql, values, exc) from exc
            self.locked = True

    def _get(self, stmt: sa.Executable, params: Params) -> _Prepared:
        key = (id(stmt), tuple(params))
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = _Prepared(stmt, self._dialect, tuple(params))
        return prepared

    def execute(self, dbapi: sqlite3.Connection, stmt: sa.Executable, params: Params | list[Params]) -> int | None:
        """Run ``stmt`` with ``params`` (one row, or many: ``executemany``); the rows it touched, or None when this
        statement must take SQLAlchemy's path (nothing was run).  A value a bind processor refuses raises before
        anything is sent."""
        many = isinstance(params, list)
        first = params[0] if many else params  # type: ignore[index]
        prepared = self._get(stmt, first)  # type: ignore[arg-type]
        if not prepared.supported:
            return None
        values = [prepared.row(p) for p in params] if many else prepared.row(params)  # type: ignore[union-attr,arg-type]
        cursor = dbapi.executemany(prepared.sql, values) if many else dbapi.execute(prepared.sql, values)
        if self.ops is not None:
            self.ops.append((prepared.sql, values))
        return cursor.rowcount
