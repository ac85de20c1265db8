"""The journal: every state change of a trade or an order is committed here before the engine acts on it.

Writes go through one connection.  Outside a ``batch()`` each write is its own transaction; inside, the
writes of one engine step (say, every exit a batch of ticks fired) commit together - one commit instead of many.

Write-ahead is the journal's to keep, not its callers': every write gets a position, and only after a commit
has returned does the journal call its ``after_commit`` hooks, with a ``CommitReceipt`` naming the highest
committed position (and the positions of rolled-back transactions, which never will be).  The order executor
hands the broker only orders and cancels whose journal writes a receipt covers, so nothing reaches the broker
before the commit that records it, whatever order its callers do things in.

Opening - deliberately paranoid - is store/journal_open.py's; the exit log of an engine's exits on SQLite is
store/exit_log.py's (the journal writes it and commits what it holds).

Money and quantities are ``Decimal`` (columns of type ``tickguard.store.exact.Exact``): a float handed to one is
refused with a ``TypeError`` naming the column, and a Decimal inside a JSON column (a snapshot, an event) is
written as its exact string.

Size: one class whose writes, reads, commit receipts and exit records share the connection and its transaction
state; split, the write-ahead bookkeeping would be spread out.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa

from tickguard.core.order_state import FINAL
from tickguard.store.engine_lock import (
    AdvisoryLock,
    Fence,
    FileLock,
    LockError,
    LockHeld,
    Superseded,
    refusal,
    superseded,
)
from tickguard.store.exact import NotExactError, NotFiniteError
from tickguard.store.exit_log import (
    BUSY,
    ExitLog,
    ExitLogError,
    ExitRecords,
    apply_pending,
    committed_seq,
    usable,
)
from tickguard.store.journal_errors import JournalError, JournalInUse
from tickguard.store.journal_open import describe, is_url, open_error, open_parts
from tickguard.store.schema import events, fills, journal_meta, legs, orders, trades, volatility
from tickguard.store.sqlite_writes import SqliteWrites
from tickguard.store.wal_checkpoint import WalCheckpointer

FINAL_TRADE_STATES = ("closed", "rejected", "cancelled")
FINAL_ORDER_STATES = tuple(sorted(status.value for status in FINAL))  # the order state machine's finals
_ISSUER = object()  # only the Journal issues commit receipts
log = logging.getLogger(__name__)

# The hot writes' statements, built once (see Journal._write); "key_" names the row to change.
_INSERT_TRADE = trades.insert()
_UPDATE_TRADE = trades.update().where(trades.c.trade_id == sa.bindparam("key_"))
_DELETE_LEGS = legs.delete().where(legs.c.trade_id == sa.bindparam("key_"))
_INSERT_LEG = legs.insert()
_INSERT_ORDER = orders.insert()
_UPDATE_ORDER = orders.update().where(orders.c.order_key == sa.bindparam("key_"))
_INSERT_EVENT = events.insert()
# an exit's fence read when none of its writes ran yet (all deferred): it takes SQLite's write lock, so an engine
# taking the journal over (its token's write needs that lock) waits for this transaction's commit, record and all
_LOCKING_READ = f"UPDATE journal_meta SET value = value WHERE name = '{Fence.NAME}' RETURNING value"
WAL_FRAMES_HELD = 1000  # SQLite's own automatic checkpoint size (~4 MB): past it, see ``_ready``
IDLE_LOCK_NS = 1_000_000_000  # an engine's write lock is let go after this long without a write (``_ready``)
_SET_FILL_COMMISSION = (fills.update().where(fills.c.exec_id == sa.bindparam("key_"), fills.c.commission.is_(None)))


class CommitReceipt:
    """The journal's word that every write up to position ``upto`` is committed - durable - except the writes
    of transactions that were rolled back (``voided``: they never will be).  Issued only by the ``Journal``,
    after a commit returned; the order executor sends only what a receipt covers."""

    __slots__ = ("journal", "upto", "voided")

    def __init__(self, issuer: object, journal: Journal, upto: int, voided: tuple[tuple[int, int], ...]) -> None:
        if issuer is not _ISSUER:
            raise TypeError("a CommitReceipt is issued by the Journal after a commit, never made by hand")
        self.journal = journal
        self.upto = upto
        self.voided = voided

    def covers(self, position: int) -> bool:
        """Is the write at ``position`` committed (and with it the rest of its transaction)?"""
        return 0 < position <= self.upto and not self.void(position)

    def void(self, position: int) -> bool:
        """Was the write at ``position`` rolled back?"""
        return any(lo <= position <= hi for lo, hi in self.voided)


class Journal:
    def __init__(self, engine: sa.Engine, where: str, conn: sa.Connection | None = None) -> None:
        self._engine = engine
        self.where = where
        self._conn = conn if conn is not None else engine.connect()  # the one every write goes through
        # SQLite: transactions and hot writes on the driver directly, statements compiled by SQLAlchemy
        # (sqlite_writes.py)
        self._fast = SqliteWrites(self._conn) if engine.dialect.name == "sqlite" else None
        self._depth = 0
        self._batch = _Batch(self)
        self.commits = 0
        self.last_commit_ns = 0  # how long the last commit took (perf counter)
        self.rollbacks = 0  # transactions rolled back with writes in them (their orders are never sent)
        self.position = 0  # writes so far: the write-ahead stamp of what was just written
        self._committed = 0  # position of the last commit
        self._settled = 0  # position of the last commit or rollback: later writes are in the open transaction
        self._voided: tuple[tuple[int, int], ...] = ()
        self.after_commit: list[Callable[[CommitReceipt], None]] = []
        # writes that belong at the end of a transaction, made just before its commit (inside it): the journal
        # recorder's trade snapshots - one per trade and commit, however many events changed the trade.  Each is
        # called with ``early`` (see commit_now).
        self.before_commit: list[Callable[[bool], None]] = []
        self._events: list[dict[str, Any]] = []  # event rows of the open batch, written just before its commit
        self._refused: str | None = None  # a write of the open batch the database refused (see _commit)
        self._preparing = False
        self._early = False  # the commit being made is an exit's (commit_now(early=True))
        self._notifying = False
        self._again = False
        self._id: str | None = None
        self._checkpointer: WalCheckpointer | None = None  # SQLite: store/wal_checkpoint.py
        self._lock: FileLock | AdvisoryLock | None = None  # held by a running engine (store/engine_lock.py)
        self._fence: Fence | None = None  # its turn, read back before each of its commits (engine_lock.Fence)
        self._insert_fill = _insert_new(engine.dialect.name, fills, "exec_id")
        self._path: Path | None = None  # SQLite: the file (its exit logs lie beside it)
        self._exit_log_wanted = False  # opened for an engine, SQLite with synchronous=NORMAL, not switched off
        self._exits: ExitRecords | None = None  # the exit log, once an engine took the journal over (exit_log.py)
        self._unlogged = False  # a write of the open transaction the exit log cannot hold (SQLAlchemy's path)
        self._broken: str | None = None  # exits on the wire that could not be committed: nothing commits any more
        self.clock: Callable[[], int] = time.monotonic_ns  # when the write lock was taken (``_ready``)
        self._locked_at = 0

    # -------------------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, target: str | Path, create: bool = True, synchronous: str = "NORMAL",
             for_engine: bool = False, exit_log: bool = True) -> Journal:
        """Open (and, if ``create``, create or migrate) the journal at a SQLite path or a database URL.

        ``for_engine``: held for one running engine until ``close`` (or the process's death), taken before the
        journal is read or migrated; a second engine is refused with ``JournalInUse`` naming the holder
        (store/engine_lock.py - two engines would both send a trade's exit).  Readers take no lock, but migrate a
        journal only under it: never under a running engine of another version.

        ``exit_log``: an engine's exits on SQLite with ``synchronous`` NORMAL are made durable by an append to its
        exit log, not by a COMMIT (store/exit_log.py); what the logs of an engine that stopped hold is applied
        here, under the lock, before anything reads the journal."""
        where = describe(target)
        opened: list[Any] = [None, None, None]  # the engine, the connection, the lock - as far as they got
        try:
            open_parts(opened, target, where, create, synchronous, for_engine)
        except BaseException as exc:
            engine, conn, lock = opened
            if lock is not None:
                lock.release()
            if conn is not None:
                conn.close()
            if engine is not None:
                engine.dispose()
            mapped = open_error(exc, where)
            if mapped is exc:
                raise
            raise mapped from (None if isinstance(exc, LockError) else exc)
        engine, conn, lock = opened
        journal = cls(engine, where, conn)
        journal._lock = lock
        if not is_url(target):  # the log is copied into the file by a thread, never inside a commit
            journal._path = Path(target)
            journal._exit_log_wanted = exit_log and for_engine and synchronous.upper() == "NORMAL" and usable()
            journal._checkpointer = WalCheckpointer(Path(target), synchronous.upper()).start()
            weakref.finalize(journal, journal._checkpointer.stop, 0)  # a journal dropped unclosed stops it too
        return journal

    def take_over(self) -> None:
        """This engine's turn on a journal held for it (``for_engine``), just before it reads the journal to recover:
        a token of its own in the journal, read back before each of its commits - an engine still running on it
        (its lock broken: a deleted lock file, a lost session) is refused every commit from now on, so it sends
        nothing more (engine_lock.Fence).  Called by the engine once connected: a start that fails earlier leaves
        a running engine alone.  Without the lock (a journal opened to read) it does nothing."""
        if self._lock is None or self._fence is not None:
            return
        try:
            self._fence = Fence.start(self._conn)
        except sa.exc.DBAPIError as exc:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.rollback()
            busy = f" - {BUSY}" if "locked" in str(exc.orig) else ""
            raise JournalError(f"journal {self.where} cannot be written: {exc.orig}{busy}") from exc
        if self._path is not None:
            self._open_exit_log(self._path)

    def _open_exit_log(self, path: Path) -> None:
        """After the token: what an engine that ran until now logged is applied (its commits are refused from now on,
        and the token's write waited for its open transaction), then this engine's own log is opened."""
        try:
            with self._engine.connect() as conn:
                con = conn.connection.driver_connection
                apply_pending(con, path, self.where)  # type: ignore[arg-type]
                seq = committed_seq(con)  # type: ignore[arg-type]
            if self._exit_log_wanted and self._fast is not None:
                self._exits = ExitRecords(ExitLog(path, self.journal_id), seq)
                self._fast.ops = []
                self._fast.immediate = True
        except ExitLogError as exc:
            raise JournalError(f"journal {self.where}: {exc}") from None

    def _superseded(self) -> JournalInUse | None:
        """After a failed write: whether it failed because another engine took the journal over (its rows in the
        way), said as such rather than as the write's own error."""
        fence = self._fence
        if fence is None:
            return None
        try:
            fence.check(fence.read(self._engine))
        except Superseded as exc:
            return JournalInUse(superseded(self.where, exc.holder))
        except sa.exc.SQLAlchemyError:
            return None
        return None

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._exits is not None:  # kept when it holds records not committed: the next start applies them
            self._exits.log.close(remove=not self._exits.open)
        if self._lock is not None:  # after the last write: the next engine may start now
            self._lock.release()
            self._lock = None
        self._conn.close()
        self._engine.dispose()

    # --------------------------------------------------------------------------------------- writing

    def batch(self) -> _Batch:
        """``with journal.batch():`` group writes into one transaction, committed when the outermost batch ends; rolled
        back when it raises.  (A plain context manager, not a generator: it wraps every engine step.)"""
        return self._batch

    def commit_now(self, early: bool = False) -> None:
        """Commit the open transaction now, inside a batch too (the batch goes on in a new transaction), and run
        the after-commit hooks.  For the engine's exits: one is released as soon as its symbol's evaluation is
        durable, not when the whole step is.  Called between two complete changes only - a transaction never
        holds half of one.

        ``early``: an exit's commit, the one between a crossing and its order on the wire.  The before-commit
        hooks are told, and may leave for the next commit what recovery rebuilds from the rows this one holds
        (the journal recorder: the snapshot and events of a trade whose only change is an exit whose order row
        is in this transaction - ``runtime/journal_recorder.py``)."""
        self._early = early
        try:
            self._commit()
        finally:
            self._early = False

    def _write(self, stmt: sa.Executable, params: dict[str, Any] | list[dict[str, Any]] | None = None,
               defer: bool = False) -> int:
        """Execute one write (committed at once outside a batch); returns the rows it touched (the rows it returned,
        for a ``RETURNING`` statement: psycopg's rowcount is not to be trusted for an ``ON CONFLICT DO NOTHING``).

        The hot writes (events, trade snapshots, legs, orders) pass a constant statement and their values as
        ``params``: SQLAlchemy then compiles each statement once and reuses it, where building a statement with
        ``.values(...)`` per write cost most of an exit's journal time (bench/wire_to_wire.py's profile).

        ``defer`` (a write whose result no caller reads): with an exit log, bound now and run by SQLite just before
        the journal's next statement - after the send, for an exit's order row (``SqliteWrites.defer``)."""
        try:
            fast = None
            if params is not None and self._fast is not None:
                if defer and self._exits is not None:
                    fast = self._fast.defer(stmt, params)
                else:
                    self._fast.flush()  # what was deferred runs first: the writes keep their order
                    fast = self._fast.write(stmt, params)
            if fast is not None:
                rows = fast
            else:
                self._unlogged = True  # the exit log holds the driver's writes only: this transaction commits
                if self._fast is not None:  # SQLAlchemy's path, inside the journal's transaction on the driver
                    self._fast.flush()
                    self._fast.begin(stmt, params)
                result = self._conn.execute(stmt, params) if params is not None else self._conn.execute(stmt)
                rows = len(result.all()) if result.returns_rows else result.rowcount
        except (NotExactError, NotFiniteError):  # refused while binding (the SQLite path): nothing was sent
            if self._depth == 0:
                self._abandon("a write failed")
            raise
        except sa.exc.StatementError as exc:
            self._failed(exc)
        except Exception as exc:  # refused on the driver's path before anything was sent (a value JSON cannot hold)
            if self._depth and self._refused is None:  # nothing sent, but the batch's change is no longer whole
                self._refused = f"{type(exc).__name__}: {exc}"
            raise
        self.position += 1
        if self._depth == 0:
            self._commit()
        return rows

    def _failed(self, exc: sa.exc.StatementError) -> NoReturn:
        """A write the database refused (or SQLAlchemy, while binding): said as what it means for the journal."""
        if (taken := self._superseded()) is not None:  # another engine's rows in the way: no write error
            self._abandon("another engine took the journal over")
            raise taken from None
        if self._depth == 0:
            self._abandon("a write failed")
        if isinstance(exc.orig, (NotExactError, NotFiniteError)):  # refused while binding: nothing was sent
            raise exc.orig from None
        if self._depth and self._refused is None:  # the batch's change can no longer commit whole
            self._refused = f"{type(exc.orig).__name__}: {exc.orig}"
        if isinstance(exc, sa.exc.OperationalError):  # the database, not the statement: locked, gone, full
            raise JournalError(f"journal {self.where} cannot be written: {exc.orig} (is another process "
                               "holding it, or the disk full?)") from exc
        raise exc

    def _flush_deferred(self) -> None:
        """Run the deferred writes now (before a read, which must see them)."""
        try:
            self._fast.flush()  # type: ignore[union-attr]
        except sa.exc.StatementError as exc:
            self._failed(exc)

    def _in_transaction(self) -> bool:
        return self._fast.in_transaction() if self._fast is not None else self._conn.in_transaction()

    def _end_transaction(self) -> None:
        """COMMIT the open transaction (the one place that does; SQLite's on its driver: sqlite_writes.py)."""
        fence = self._fence
        if self._fast is not None:
            self._fast.flush()  # the writes deferred past an exit's send (``_write``'s ``defer``)
            if fence is not None:  # still this engine's turn? (engine_lock.Fence)
                fence.check(self._fast.scalar(fence.sql))
            if self._exits is not None:  # the exit records this transaction holds are committed with it
                self._exits.seal(self._fast.driver())
            self._fast.commit()
        else:
            if isinstance(self._lock, AdvisoryLock):  # still the locked session? (a reconnect takes it again)
                self._lock.confirm(self._conn)
            if fence is not None:
                fence.check(self._conn.exec_driver_sql(fence.sql).scalar())
            self._conn.commit()

    def _commit(self) -> None:
        if self._broken is not None:
            self._abandon("the journal stopped committing")
            raise JournalError(f"journal {self.where}: {self._broken}")
        if self._refused is None and (self.before_commit or self._events) and not self._preparing:
            self._prepare()
        if self._refused is not None:  # checked after the before-commit hooks: their writes can be refused too
            # A write of this transaction was refused and its caller went on: PostgreSQL has aborted the transaction
            # (its COMMIT would quietly roll back), and on SQLite the rest would commit without it - either way not
            # the complete change a transaction must hold.  Rolled back, its writes void, and said.
            refused = self._refused
            self._abandon(f"a write of the transaction was refused ({refused})")
            raise JournalError(f"journal {self.where}: a write of this transaction was refused ({refused}); the "
                               "transaction is rolled back - nothing it records will be sent")
        if self._fast is not None and self.position == self._settled and (self._early or not self._logged()):
            if self._fast.locked and not self._early and self.clock() - self._locked_at > IDLE_LOCK_NS:
                self._release_idle_lock()
            return  # SQLite: nothing written since the last commit (a transaction begun by ready(), or none) -
            # known without asking the driver, which every engine step's end would otherwise do (bench/read_cost.py)
        if not self._in_transaction() and not (self._fast is not None and self._fast.deferred):
            return
        started = time.perf_counter_ns()
        if self._early and self._exits is not None and not self._unlogged:
            self._log_exits(started)
            return
        try:
            self._end_transaction()
        except BaseException as exc:
            # The outcome is unknown (PostgreSQL may have committed before the connection broke): what the
            # transaction recorded is treated as never written, so nothing it holds is ever sent by this process.
            self._abandon("the commit failed")
            if isinstance(exc, Superseded):  # the fence: another engine started on this journal after this one
                raise JournalInUse(superseded(self.where, exc.holder)) from None
            if isinstance(exc, LockHeld):  # the session holding the engine lock ended, and another engine took it
                raise JournalInUse(refusal(self.where, exc.holder)) from None
            if isinstance(exc, sa.exc.DBAPIError):  # the database refused it: full, gone, a deferred constraint
                raise JournalError(f"journal {self.where}: a commit failed: {exc.orig}") from exc
            if isinstance(exc, sqlite3.Error):  # SQLite's COMMIT is the driver's own
                raise JournalError(f"journal {self.where}: a commit failed: {exc}") from exc
            raise
        self.commits += 1
        self.last_commit_ns = time.perf_counter_ns() - started  # for the commit-latency metric
        self._committed = self._settled = self.position
        if self._exits is not None:
            self._exits.committed()
            self._fast.ops = []  # type: ignore[union-attr]
            self._unlogged = False
        self._notify()
        if self._fast is not None and not self._early:
            # The next transaction's BEGIN now, after the sends: not on the next exit's path.  Not after an exit's
            # commit: the message budget releases that exit only once the commit returns (Engine._release_exits),
            # so a BEGIN here sat between the commit and the order on the wire; the placement's own journal note
            # (its order id) begins the next transaction, after the send.
            self._ready()

    def _ready(self) -> None:
        """Begin the next transaction (``SqliteWrites.ready``).  With an exit log it takes SQLite's write lock, and the
        fence is read at once: while the lock is held no other engine can write its token, so the exits of this
        transaction are released without a read of their own (a cold statement, ~50 us on the exit's path).  A
        superseded engine is told at its next commit, whose read fails."""
        assert self._fast is not None
        if self._exits is not None:
            # A transaction begun at once holds a snapshot from then on, and SQLite starts its log over only for a
            # writer whose snapshot began with the log wholly copied into the file - never the case right after a
            # commit: held all the time, the log grew without end (17 MB per 1,000 exits).  Past a size, the next
            # transactions begin deferred until the checkpoint thread has copied the log and SQLite started it
            # over; their exits take the lock with their fence read meanwhile (``_log_exits``).
            checkpointer = self._checkpointer
            self._fast.immediate = checkpointer is None or checkpointer.log_frames < WAL_FRAMES_HELD
        if not self._fast.ready():
            return
        self._locked_at = self.clock()
        if self._fence is not None:
            try:
                self._fence.check(self._fast.scalar(self._fence.sql))
                self._fast.fenced = True
            except (Superseded, sqlite3.Error):
                pass

    def _release_idle_lock(self) -> None:
        """An engine that wrote nothing for a while lets go of SQLite's write lock (``_ready``), so that an engine
        taking the journal over (its token's write needs it) is not kept waiting by an idle one; the lock is taken
        again after the next commit."""
        assert self._fast is not None
        try:
            self._fast.rollback_read()
        except sqlite3.Error:
            return
        self._fast.immediate = False  # a deferred BEGIN: ``_ready`` decides again after the next commit
        self._fast.ready()

    def _logged(self) -> bool:
        """Exit records in the open transaction (appended to the exit log, not committed to SQLite yet)?"""
        return self._exits is not None and bool(self._exits.open)

    def _log_exits(self, started: int) -> None:
        """An exit's commit through the exit log (store/exit_log.py): the fence read inside the open transaction -
        which holds SQLite's write lock since its first write - then its writes appended in one record.  The
        transaction stays open: the step's commit commits it, with the record's number."""
        assert self._exits is not None and self._fast is not None
        fence = self._fence
        try:
            if not self._fast.in_transaction():  # the lock and the fence read went with it (an error's rollback)
                self._fast.unlock()
            if fence is not None and not self._fast.fenced:  # read under SQLite's write lock (the locking read
                self._fast.begin(_LOCKING_READ, None)        # takes it if no write ran yet): see ``_ready``
                fence.check(self._fast.scalar(fence.sql if self._fast.locked else _LOCKING_READ))
                self._fast.locked = self._fast.fenced = True
            ops, self._fast.ops = self._fast.ops, []
            self._exits.append(ops)  # type: ignore[arg-type]
        except BaseException as exc:
            self._abandon("the exit log could not be written")
            if isinstance(exc, Superseded):
                raise JournalInUse(superseded(self.where, exc.holder)) from None
            if isinstance(exc, ExitLogError):
                raise JournalError(f"journal {self.where}: {exc}") from None
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"journal {self.where}: a commit failed: {exc}") from exc
            raise
        self.commits += 1
        self.last_commit_ns = time.perf_counter_ns() - started
        self._committed = self._settled = self.position
        self._notify()

    def _prepare(self) -> None:
        """Run the before-commit hooks, then write the batch's waiting event rows; all join the transaction about to
        commit (none commits on its own).  A failure rolls the whole transaction back: nothing it records is sent."""
        self._preparing = True
        self._depth += 1
        try:
            for hook in self.before_commit:
                hook(self._early)
            if self._events:
                rows, self._events = self._events, []
                self._write(_INSERT_EVENT, rows, defer=True)
        except BaseException:
            self._abandon("a write before the commit failed")
            raise
        finally:
            self._depth -= 1
            self._preparing = False

    def _abandon(self, why: str) -> None:
        """Roll the open transaction back; its writes are void for every receipt from now on."""
        self._events.clear()  # never written: they went with the transaction
        self._refused = None
        with contextlib.suppress(sa.exc.SQLAlchemyError, sqlite3.Error):
            if self._fast is not None:  # SQLite's transaction is the driver's (sqlite_writes.py)
                self._fast.rollback()
            else:
                self._conn.rollback()
        if self._fast is not None and self._exits is not None:
            self._fast.ops = []
            self._fast.deferred = []
            self._unlogged = False
        try:
            if self._fast is not None and self._exits is not None and self._exits.open:
                self._reapply_exits()  # on the wire already: the journal must hold them, in a transaction of their own
        finally:
            if self.position > self._settled:
                self.rollbacks += 1
                self._voided += ((self._settled + 1, self.position),)
                log.error("journal %s: %s; %d write(s) rolled back - nothing they record will be sent", self.where,
                          why, self.position - self._settled)
            self._settled = self.position

    def _reapply_exits(self) -> None:
        assert self._exits is not None and self._fast is not None
        fence = self._fence

        def check(con: sqlite3.Connection) -> None:
            if fence is not None:
                fence.check(con.execute(fence.sql).fetchone()[0])

        try:
            self._exits.reapply(self._fast.driver(), check)
        except BaseException as exc:
            # nothing more commits in this process: a later commit would record these records' numbers without
            # their writes, and the next start would skip them (their log is kept: see close)
            self._broken = f"exits on the wire could not be committed ({exc}); restart to apply {self._exits.log.path}"
            log.critical("journal %s: %d exit record(s) whose orders may be on the wire are in the exit log %s only "
                         "(%s); the next start applies them", self.where, len(self._exits.open), self._exits.log.path,
                         exc)
            raise JournalError(f"journal {self.where}: exits on the wire could not be committed ({exc}); they are in "
                               f"the exit log {self._exits.log.path}, which the next start applies") from exc

    def receipt(self) -> CommitReceipt:
        """What is committed now."""
        return CommitReceipt(_ISSUER, self, self._committed, self._voided)

    def _notify(self) -> None:
        """Run the after-commit hooks with a receipt of what is now durable.  A commit made while they run (their
        own writes) does not re-enter them: they run again, with a new receipt, once they are done."""
        if self._notifying:
            self._again = True
            return
        self._notifying = True
        try:
            again = True
            while again:
                self._again = False
                receipt = self.receipt()
                for hook in list(self.after_commit):
                    hook(receipt)
                again = self._again
        finally:
            self._notifying = False

    def insert_trade(self, row: dict[str, Any]) -> None:
        self._write(_INSERT_TRADE, row)

    def update_trade(self, trade_id: str, **values: Any) -> None:
        self._write(_UPDATE_TRADE, {"key_": trade_id, **values}, defer=True)

    def put_legs(self, trade_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace a trade's leg rows (a handful) with their current state."""
        with self.batch():
            self._write(_DELETE_LEGS, {"key_": trade_id})
            if rows:
                self._write(_INSERT_LEG, [{"trade_id": trade_id, **r} for r in rows])

    def legs_of(self, trade_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not trade_ids:
            return []
        return self._rows(sa.select(legs).where(legs.c.trade_id.in_(list(trade_ids)))
                          .order_by(legs.c.trade_id, legs.c.name))

    def insert_order(self, row: dict[str, Any]) -> None:
        self._write(_INSERT_ORDER, row, defer=True)

    def rehearse_order(self, row: dict[str, Any]) -> None:
        """Bind ``row`` as ``insert_order`` binds an exit's order row, and encode it as that exit's record - written
        nowhere, kept nowhere: the engine's exit rehearsal (runtime/exit_rehearsal.py) keeps this code and its data
        in the CPU's caches between exits.  A value SQLite would refuse raises here, as the exit's own write would.
        (PostgreSQL's path is SQLAlchemy's, bound when it runs: nothing to rehearse.)"""
        if self._fast is None:
            return
        op = self._fast.bind(_INSERT_ORDER, row)
        if op is not None and self._exits is not None:
            self._exits.log.encode(self._exits.seq + 1, [op])

    def update_order(self, order_key: str, **values: Any) -> None:
        self._write(_UPDATE_ORDER, {"key_": order_key, **values}, defer=True)

    def insert_fill(self, row: dict[str, Any]) -> bool:
        """Journal an execution once.  An exec id already journaled is a replay (a reconnect, a restart, another
        run on this journal): not written again and logged - never an error.  Returns whether it was written."""
        if self._write(self._insert_fill, row):
            return True
        found = self._read(sa.select(fills.c.order_key).where(fills.c.exec_id == row["exec_id"]))
        had = found[0][0] if found else None
        if had == row["order_key"]:
            log.info("journal: execution %s of %s is already journaled; the replay is not written again",
                     row["exec_id"], had)
        else:
            log.warning("journal: execution id %s is already journaled for %s; the fill of %s with the same id is "
                        "not written as a row (its quantities are on its order)", row["exec_id"], had, row["order_key"])
        return False

    def set_fill_commission(self, exec_id: str, commission: Any) -> None:
        """The commission of a journaled execution that arrived after it (IB reports it in a message of its own)."""
        self._write(_SET_FILL_COMMISSION, {"key_": exec_id, "commission": commission})

    def event(self, kind: str, ts_ns: int, data: dict[str, Any], trade_id: str | None = None,
              order_key: str | None = None, user: str | None = None, account: str | None = None) -> None:
        """An event row.  Inside a batch the rows wait and are written together just before the commit (one
        statement for an exit's four events, in the same transaction); outside one, at once."""
        row = {"kind": kind, "ts_ns": ts_ns, "data": data, "trade_id": trade_id, "order_key": order_key,
               "user_id": user, "account": account}
        if self._depth and not self._preparing:
            self._events.append(row)
        else:
            self._write(_INSERT_EVENT, row)

    def save_volatility(self, symbol: str, atr: float, adr: float, ts_ns: int) -> None:
        with self.batch():
            self._write(volatility.delete().where(volatility.c.symbol == symbol))
            self._write(volatility.insert().values(symbol=symbol, atr=atr, adr=adr, ts_ns=ts_ns))

    # --------------------------------------------------------------------------------------- reading

    @property
    def journal_id(self) -> str:
        """This journal's random id (created once, migration 0006), part of every idempotency key it holds."""
        if self._id is None:
            with self._engine.connect() as conn:
                value = conn.execute(sa.select(journal_meta.c.value)
                                     .where(journal_meta.c.name == "journal_id")).scalar()
            if not value:
                raise JournalError(f"journal {self.where} has no journal id (table journal_meta); refusing to make "
                                   "one up - its orders could not be told from another journal's")
            self._id = str(value)
        return self._id

    def claim(self, kind: str) -> None:
        """Mark this journal as holding ``kind`` trades ("live" for ``tickguard run``, "simulated" for ``tickguard
        sim``) the first time, and refuse it to the other kind ever after: a live engine must never adopt, resend
        or reconcile simulated trades against a real account, and a simulation must not write into a live
        journal.  A journal from before the mark is claimed by whichever opens it first."""
        with self._engine.connect() as conn:
            held = conn.execute(sa.select(journal_meta.c.value).where(journal_meta.c.name == "kind")).scalar()
        if held is None:
            with self.batch():
                self._write(journal_meta.insert().values(name="kind", value=kind))
        elif held != kind:
            run, sim = "tickguard run", "tickguard sim"
            command, other = (run, sim) if held == "live" else (sim, run)
            raise JournalError(f"journal {self.where} holds {held} trades (written by {command}); {other} refuses it "
                               f"- give it a journal of its own")

    def load_volatility(self, symbol: str) -> dict[str, Any] | None:
        rows = self._rows(sa.select(volatility).where(volatility.c.symbol == symbol))
        return rows[0] if rows else None

    def _read(self, stmt: sa.Select[Any]) -> list[sa.Row[Any]]:
        """A read on the journal's connection, inside its transaction (so it sees the batch's own writes).  On SQLite
        a read with no write of the transaction before it would keep the snapshot it took - in the transaction begun
        ahead of the next writes (``SqliteWrites.ready``) - until the next commit: a write after another
        connection's would then be refused (SQLite does not let a transaction write on an outdated snapshot) and
        the WAL checkpoint held back (found by an independent review).  So that snapshot is given up at once."""
        if self._fast is not None and self._fast.deferred:
            self._flush_deferred()
        rows = self._conn.execute(stmt).all()
        if (self._fast is not None and self.position == self._settled and not self._logged()
                and self._fast.in_transaction()):
            try:
                self._fast.rollback_read()
                self._ready()
            except sqlite3.Error:
                self._abandon("ending a transaction that only read failed")  # nothing written: nothing void
        return rows

    def _rows(self, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in self._read(stmt)]

    def open_trades(self) -> list[dict[str, Any]]:
        return self._rows(sa.select(trades).where(trades.c.state.not_in(FINAL_TRADE_STATES))
                          .order_by(trades.c.created_ns, trades.c.trade_id))

    def orders_of(self, trade_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not trade_ids:
            return []
        return self._rows(sa.select(orders).where(orders.c.trade_id.in_(list(trade_ids)))
                          .order_by(orders.c.created_ns, orders.c.order_key))

    def orders_over(self, within_ns: int) -> dict[str, tuple[str, set[str]]]:
        """The orders of trades that are over (closed, rejected, cancelled) made within ``within_ns`` of the newest
        order: each one's status and journaled exec ids (recovery: the broker's book still lists the day's)."""
        newest = self._read(sa.select(sa.func.max(orders.c.created_ns)))[0][0]
        if newest is None:
            return {}
        over = (sa.select(orders.c.order_key).join(trades, orders.c.trade_id == trades.c.trade_id)
                .where(trades.c.state.in_(FINAL_TRADE_STATES), orders.c.created_ns >= newest - within_ns))
        return self._orders_with_execs(lambda key: key.in_(over))

    def orders_held(self, keys: Sequence[str]) -> dict[str, tuple[str, set[str]]]:
        """Of ``keys``, the orders this journal holds: each one's status and its journaled exec ids (recovery looks
        up the keys the broker's book of the day lists that no open trade owns - orders of trades already over)."""
        held: dict[str, tuple[str, set[str]]] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):  # within any SQLite's limit of bound values
            chunk = keys[start:start + 500]
            held.update(self._orders_with_execs(lambda key, chunk=chunk: key.in_(chunk)))
        return held

    def _orders_with_execs(self, which: Callable[[Any], Any]) -> dict[str, tuple[str, set[str]]]:
        """The status and journaled exec ids of the orders whose key ``which`` (a condition on a key column) picks."""
        held: dict[str, tuple[str, set[str]]] = {
            key: (status, set()) for key, status in self._read(
                sa.select(orders.c.order_key, orders.c.status).where(which(orders.c.order_key)))}
        for key, exec_id in self._read(sa.select(fills.c.order_key, fills.c.exec_id).where(which(fills.c.order_key))):
            held[key][1].add(exec_id)
        return held

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
        for user, request in self._read(sa.select(trades.c.user_id, trades.c.request)):
            ref = request.get("ref") if isinstance(request, dict) else None
            if ref:
                out.add((user, ref))
        return out

    def max_trade_number(self) -> int:
        """Highest numeric suffix of the trade ids, so a restarted engine never reuses an id."""
        best = 0
        for (tid,) in self._read(sa.select(trades.c.trade_id)):
            digits = "".join(ch for ch in tid if ch.isdigit())
            if digits:
                best = max(best, int(digits))
        return best


def _insert_new(dialect: str, table: sa.Table, key: str) -> sa.Executable:
    """``INSERT`` that does nothing when a row with the same ``key`` exists (SQLite and PostgreSQL alike), built
    once: the values are the execution's.  PostgreSQL says what it wrote with ``RETURNING`` (psycopg's rowcount is
    not to be trusted for ``ON CONFLICT DO NOTHING``); SQLite's own count of changed rows is exact."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=[key])


class _Batch:
    """``Journal.batch``'s context: the outermost one commits at its end, or rolls back when the block raised."""

    __slots__ = ("_journal",)

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def __enter__(self) -> None:
        self._journal._depth += 1

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        journal = self._journal
        journal._depth -= 1
        if journal._depth == 0:
            if exc_type is not None:
                journal._abandon("the batch raised")
            else:
                journal._commit()
