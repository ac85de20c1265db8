"""The journal: every state change of a trade or an order is committed here before the engine acts on it.

Writes go through one connection.  Outside a ``batch()`` each write is its own transaction; inside, the
writes of one engine step (say, every exit a batch of ticks fired) commit together *before* any of them is
sent - one commit instead of many, and write-ahead is kept.  Opening is deliberately paranoid: a file that
is not a SQLite database, a journal from a newer tickguard, or an unreachable PostgreSQL is refused with a
clear error and is never written to.

Money and quantities are ``Decimal`` (columns of type ``tickguard.store.exact.Exact``): a float handed to one is
refused with a ``TypeError`` naming the column, and a Decimal inside a JSON column (a snapshot, an event) is
written as its exact string.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tickguard.core.order_state import FINAL
from tickguard.store.exact import NotExactError, NotFiniteError, json_dumps
from tickguard.store.schema import events, fills, legs, orders, trades, volatility

FINAL_TRADE_STATES = ("closed", "rejected", "cancelled")
FINAL_ORDER_STATES = tuple(sorted(status.value for status in FINAL))  # the order state machine's finals
SQLITE_MAGIC = b"SQLite format 3\x00"
_MIGRATIONS = Path(__file__).with_name("migrations")


class JournalError(RuntimeError):
    """The journal cannot be used; the message says which one and why."""


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def is_url(target: str | Path) -> bool:
    return "://" in str(target)


def describe(target: str | Path) -> str:
    """The target without its password, for messages."""
    if is_url(target):
        return sa.make_url(str(target)).render_as_string(hide_password=True)
    return str(target)


class Journal:
    def __init__(self, engine: sa.Engine, where: str) -> None:
        self._engine = engine
        self.where = where
        self._conn = engine.connect()
        self._depth = 0
        self.commits = 0

    # -------------------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, target: str | Path, create: bool = True, synchronous: str = "NORMAL") -> Journal:
        """Open (and, if ``create``, create or migrate) the journal at a SQLite path or a database URL."""
        where = describe(target)
        if is_url(target):
            engine = sa.create_engine(str(target), pool_pre_ping=True, json_serializer=json_dumps)
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("select 1"))
            except sa.exc.OperationalError as exc:
                engine.dispose()
                raise JournalError(f"cannot reach the journal database {where}: {exc.orig}") from exc
        else:
            engine = _sqlite_engine(Path(target), create, synchronous)
        try:
            _check_and_migrate(engine, where, create)
        except JournalError:
            engine.dispose()
            raise
        except sa.exc.DatabaseError as exc:
            engine.dispose()
            raise JournalError(f"journal {where} is unreadable (corrupt?): {exc.orig}") from exc
        return cls(engine, where)

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()

    # --------------------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes into one transaction, committed when the outermost batch ends."""
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._conn.rollback()
            raise
        self._depth -= 1
        if self._depth == 0:
            self._commit()

    def _write(self, stmt: sa.Executable) -> None:
        try:
            self._conn.execute(stmt)
        except sa.exc.StatementError as exc:
            if isinstance(exc.orig, (NotExactError, NotFiniteError)):  # refused while binding: nothing was sent
                raise exc.orig from None
            raise
        if self._depth == 0:
            self._commit()

    def _commit(self) -> None:
        if self._conn.in_transaction():
            self._conn.commit()
            self.commits += 1

    def insert_trade(self, row: dict[str, Any]) -> None:
        self._write(trades.insert().values(**row))

    def update_trade(self, trade_id: str, **values: Any) -> None:
        self._write(trades.update().where(trades.c.trade_id == trade_id).values(**values))

    def put_legs(self, trade_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace a trade's leg rows (a handful) with their current state."""
        with self.batch():
            self._write(legs.delete().where(legs.c.trade_id == trade_id))
            if rows:
                self._write(legs.insert().values([{"trade_id": trade_id, **r} for r in rows]))

    def legs_of(self, trade_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not trade_ids:
            return []
        return self._rows(sa.select(legs).where(legs.c.trade_id.in_(list(trade_ids)))
                          .order_by(legs.c.trade_id, legs.c.name))

    def insert_order(self, row: dict[str, Any]) -> None:
        self._write(orders.insert().values(**row))

    def update_order(self, order_key: str, **values: Any) -> None:
        self._write(orders.update().where(orders.c.order_key == order_key).values(**values))

    def insert_fill(self, row: dict[str, Any]) -> None:
        self._write(fills.insert().values(**row))

    def event(self, kind: str, ts_ns: int, data: dict[str, Any], trade_id: str | None = None,
              order_key: str | None = None, user: str | None = None, account: str | None = None) -> None:
        self._write(events.insert().values(kind=kind, ts_ns=ts_ns, data=data, trade_id=trade_id,
                                           order_key=order_key, user_id=user, account=account))

    def save_volatility(self, symbol: str, atr: float, adr: float, ts_ns: int) -> None:
        with self.batch():
            self._write(volatility.delete().where(volatility.c.symbol == symbol))
            self._write(volatility.insert().values(symbol=symbol, atr=atr, adr=adr, ts_ns=ts_ns))

    # --------------------------------------------------------------------------------------- reading

    def load_volatility(self, symbol: str) -> dict[str, Any] | None:
        rows = self._rows(sa.select(volatility).where(volatility.c.symbol == symbol))
        return rows[0] if rows else None

    def _rows(self, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in self._conn.execute(stmt)]

    def open_trades(self) -> list[dict[str, Any]]:
        return self._rows(sa.select(trades).where(trades.c.state.not_in(FINAL_TRADE_STATES))
                          .order_by(trades.c.created_ns, trades.c.trade_id))

    def orders_of(self, trade_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not trade_ids:
            return []
        return self._rows(sa.select(orders).where(orders.c.trade_id.in_(list(trade_ids)))
                          .order_by(orders.c.created_ns, orders.c.order_key))

    def fills_of(self, trade_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not trade_ids:
            return []
        return self._rows(sa.select(fills).where(fills.c.trade_id.in_(list(trade_ids))).order_by(fills.c.ts_ns))

    def list_trades(self, state: str | None = None, symbol: str | None = None,
                    user: str | None = None) -> list[dict[str, Any]]:
        stmt = sa.select(trades).order_by(trades.c.created_ns, trades.c.trade_id)
        if state:
            stmt = stmt.where(trades.c.state == state)
        if symbol:
            stmt = stmt.where(trades.c.symbol == symbol.upper())
        if user:
            stmt = stmt.where(trades.c.user_id == user)
        return self._rows(stmt)

    def events_of(self, trade_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not trade_ids:
            return []
        return self._rows(sa.select(events).where(events.c.trade_id.in_(list(trade_ids))).order_by(events.c.seq))

    def known_refs(self) -> set[tuple[str, str]]:
        """(user, ref) of every trade ever journaled, open or not: a ref is never reused."""
        out = set()
        for user, request in self._conn.execute(sa.select(trades.c.user_id, trades.c.request)):
            ref = request.get("ref") if isinstance(request, dict) else None
            if ref:
                out.add((user, ref))
        return out

    def max_trade_number(self) -> int:
        """Highest numeric suffix of the trade ids, so a restarted engine never reuses an id."""
        best = 0
        for (tid,) in self._conn.execute(sa.select(trades.c.trade_id)):
            digits = "".join(ch for ch in tid if ch.isdigit())
            if digits:
                best = max(best, int(digits))
        return best


def _sqlite_engine(path: Path, create: bool, synchronous: str) -> sa.Engine:
    if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
        raise JournalError(f"journal.sqlite_synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
    if path.exists():
        if path.is_dir():
            raise JournalError(f"journal path {path} is a directory, not a file")
        with path.open("rb") as fh:
            head = fh.read(16)
        if head != SQLITE_MAGIC:
            what = "empty" if not head else "not a SQLite database"
            raise JournalError(f"journal file {path} is {what} (corrupt or a different file?); "
                               "refusing to open or overwrite it")
    elif not create:
        raise JournalError(f"journal file {path} does not exist")
    elif not path.parent.exists():
        raise JournalError(f"journal directory {path.parent} does not exist")
    engine = sa.create_engine(f"sqlite:///{path}", json_serializer=json_dumps)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.close()

    if path.exists():
        try:
            with engine.connect() as conn:
                result = conn.exec_driver_sql("PRAGMA quick_check").scalar()
        except sa.exc.DatabaseError as exc:
            result = str(exc.orig)
        if result != "ok":
            engine.dispose()
            raise JournalError(f"journal file {path} failed its integrity check ({result}); "
                               "refusing to use it - restore a backup or move it aside")
    return engine


def _check_and_migrate(engine: sa.Engine, where: str, create: bool) -> None:
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        tables = set(sa.inspect(conn).get_table_names())
    if current is None:
        if tables - {"alembic_version"}:
            raise JournalError(f"{where} holds tables ({', '.join(sorted(tables))}) but no tickguard schema "
                               "version; refusing to write into a database that is not a tickguard journal")
        if not create:
            raise JournalError(f"{where} is not a tickguard journal (empty)")
    elif current not in known_revisions():
        raise JournalError(f"journal {where} has schema revision {current!r}, newer than this tickguard knows "
                           f"(up to {head_revision()!r}); upgrade tickguard - the journal was not touched")
    if current != head_revision():
        _migrate(engine, where)


def _migrate(engine: sa.Engine, where: str) -> None:
    """Upgrade to head in one transaction.  On SQLite, with foreign keys off: batch mode rebuilds a table by
    copying it and dropping the original, which the keys of tables referring to it would refuse.  That the
    migration left no row without its parent is checked before the commit; the keys are switched back on after."""
    cfg = _alembic_config()
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction, hence before it
            conn.commit()
        try:
            with conn.begin():
                before = _orphans(conn) if sqlite else []
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                after = _orphans(conn) if sqlite else []
                if len(after) > len(before):
                    raise JournalError(f"migrating journal {where} would leave rows without their parent "
                                       f"({after[:5]}); nothing was committed")
        finally:
            if sqlite:
                _foreign_keys_on(conn)


def _orphans(conn: sa.Connection) -> list[Any]:
    return list(conn.exec_driver_sql("PRAGMA foreign_key_check").all())


def _foreign_keys_on(conn: sa.Connection) -> None:
    try:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()
    except sa.exc.DBAPIError:
        conn.invalidate()  # a connection without foreign keys never goes back to the pool
