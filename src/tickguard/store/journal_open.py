"""Opening a journal: the SQLite file's checks and pragmas, the PostgreSQL connection, the engine lock, the schema
brought to this tickguard's revision, and what engines that stopped left in their exit logs applied - all before
the ``Journal`` (store/journal.py) reads or writes anything.

Deliberately paranoid: a file that is not a SQLite database, a journal from a newer tickguard, or an unreachable
PostgreSQL is refused with a clear error and is never written to.  Apart from ``Journal`` so that each module
holds one job (the journal's writes and reads, its opening).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tickguard.store.engine_lock import AdvisoryLock, FileLock, LockError, LockHeld, refusal, temporary
from tickguard.store.exact import json_dumps
from tickguard.store.exit_log import ExitLogError, apply_pending, files_of
from tickguard.store.journal_errors import JournalError, JournalInUse
from tickguard.store.sqlite_writes import BUSY_TIMEOUT_MS

SQLITE_MAGIC = b"SQLite format 3\x00"
_MIGRATIONS = Path(__file__).with_name("migrations")

# The schema revision this tickguard writes: the head of store/migrations (tests/store/test_journal.py holds the
# two equal).  Known without alembic: a journal already at head is opened without importing it (~0.25 s of every
# start of tickguard); alembic is imported only to migrate or to name the revisions it knows.
HEAD_REVISION = "0009"


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def head_revision() -> str:
    return HEAD_REVISION


def is_url(target: str | Path) -> bool:
    return "://" in str(target)


def describe(target: str | Path) -> str:
    """The target without its password, for messages."""
    if is_url(target):
        return sa.make_url(str(target)).render_as_string(hide_password=True)
    return str(target)


def sqlite_engine(path: Path, create: bool, synchronous: str) -> sa.Engine:
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
        # Python's sqlite3 begins a transaction before INSERT/UPDATE/DELETE only, never before CREATE or ALTER:
        # a migration killed half-way stayed half-done (tables without a schema version, refused ever after).
        # So it begins none itself, and every transaction SQLAlchemy begins is a real one (SQLAlchemy's
        # documented recipe for pysqlite, "Serializable isolation / Savepoints / Transactional DDL").
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA wal_autocheckpoint=0")  # never inside a commit: a thread of its own does it
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # on the driver's connection: SQLAlchemy's own execution of it (context, events) cost ~0.1 ms, once per
        # transaction - an exit's commit is one (bench/wire_to_wire.py)
        # a transaction the journal began on the driver already (SqliteWrites.begin) is the one
        driver = conn.connection.driver_connection
        if not driver.in_transaction:  # type: ignore[union-attr]
            driver.execute("BEGIN")  # type: ignore[union-attr]

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


def open_parts(opened: list[Any], target: str | Path, where: str, create: bool, synchronous: str,
                for_engine: bool) -> None:
    """``Journal.open``'s engine, connection (PostgreSQL) and lock (``for_engine``) into ``opened`` as each is made
    (the caller closes what was made if a later part fails), the schema checked and migrated under the lock."""
    if is_url(target):
        engine = opened[0] = sa.create_engine(str(target), pool_pre_ping=True, json_serializer=json_dumps)
        try:
            conn = opened[1] = engine.connect()
            conn.execute(sa.text("select 1"))
        except sa.exc.OperationalError as exc:
            raise JournalError(f"cannot reach the journal database {where}: {exc.orig}") from exc
        if for_engine:
            if getattr(conn.connection.driver_connection, "autocommit", False):
                # each statement its own transaction: no batch is whole, no fence is read before its commit
                raise JournalError(f"journal {where}: the connection is in autocommit mode (autocommit in the URL?); "
                                   "the journal needs transactions - remove it")
            opened[2] = AdvisoryLock(conn, where)
    else:
        if for_engine:  # before the file is read: a journal another engine holds is not even opened
            opened[2] = FileLock(Path(target), where)
        engine = opened[0] = sqlite_engine(Path(target), create, synchronous)
    _check_and_migrate(engine, where, create, None if is_url(target) else Path(target), held=opened[2] is not None)


def open_error(exc: BaseException, where: str) -> BaseException:
    """What ``Journal.open`` raises for ``exc``: the journal's own errors, a lock's refusal as ``JournalInUse``."""
    if isinstance(exc, LockHeld):
        return JournalInUse(refusal(where, exc.holder))
    if isinstance(exc, LockError):
        return JournalError(str(exc))
    if isinstance(exc, sa.exc.DatabaseError):
        return JournalError(f"journal {where} is unreadable (corrupt?): {exc.orig}")
    return exc


def schema_revision(conn: sa.Connection, where: str) -> tuple[str | None, set[str]]:
    """The journal's schema revision (None: an empty database) and its tables.  A database with tables and no
    tickguard revision is refused: it is not a tickguard journal, and nothing may be written into it."""
    tables = set(sa.inspect(conn).get_table_names())
    revision = None
    if "alembic_version" in tables:  # alembic's own table, read as alembic reads it (one row: the revision)
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(versions) > 1:
            raise JournalError(f"{where} holds several schema versions ({', '.join(versions)}); refusing to use it")
        revision = versions[0] if versions else None
    if revision is None and tables - {"alembic_version"}:
        raise JournalError(f"{where} holds tables ({', '.join(sorted(tables))}) but no tickguard schema version; "
                           "refusing to write into a database that is not a tickguard journal")
    return revision, tables


def _check_and_migrate(engine: sa.Engine, where: str, create: bool, path: Path | None, held: bool) -> None:
    """Bring the journal to this tickguard's schema.  Only under the engine lock (``held``, or taken here for the
    migration - store/engine_lock.py): a reader never migrates a journal under a running engine of another version,
    whose next write would meet tables it does not know."""
    with engine.connect() as conn:
        current, _ = schema_revision(conn, where)
    if path is not None and current is not None and (current == HEAD_REVISION or current in known_revisions()):
        _apply_exit_logs(engine, where, path, held)  # written by that revision's engine: before any migration
    if current == HEAD_REVISION:
        return
    if current is None:
        if not create:
            raise JournalError(f"{where} is not a tickguard journal (empty)")
    elif current not in known_revisions():
        raise JournalError(f"journal {where} has schema revision {current!r}, newer than this tickguard knows "
                           f"(up to {head_revision()!r}); upgrade tickguard - the journal was not touched")
    if current == head_revision():
        return
    if held:
        _migrate(engine, where)
        return
    conn = engine.connect() if path is None else None
    try:
        lock = temporary(path if path is not None else conn, where)  # type: ignore[arg-type]
    except LockHeld as exc:
        if conn is not None:
            conn.close()
        raise JournalError(f"journal {where} has schema revision {current!r}, older than this tickguard's "
                           f"({head_revision()!r}), and a running engine holds it ({exc.holder}): it is upgraded "
                           "when an engine of this version starts on it - stop the running one first, or read it with "
                           "the version it runs; the journal was not touched") from None
    try:
        _migrate(engine, where)
    finally:
        lock.release()
        if conn is not None:
            conn.close()


def _apply_exit_logs(engine: sa.Engine, where: str, path: Path, held: bool) -> None:
    """Apply what the exit logs of engines that stopped hold (store/exit_log.py), under the engine lock - held for
    an engine, taken for a moment by a reader (a running engine applied them at its start, and commits its own)."""
    if not files_of(path):
        return
    lock = None
    if not held:
        try:
            lock = temporary(path, where)
        except LockHeld:
            return
    try:
        with engine.connect() as conn:
            apply_pending(conn.connection.driver_connection, path, where)  # type: ignore[arg-type]
    except ExitLogError as exc:
        raise JournalError(f"journal {where}: {exc}") from None
    finally:
        if lock is not None:
            lock.release()


def _migrate(engine: sa.Engine, where: str) -> None:
    """Upgrade to head in one transaction.  On SQLite, with foreign keys off: batch mode rebuilds a table by
    copying it and dropping the original, which the keys of tables referring to it would refuse.  That the
    migration left no row without its parent is checked before the commit; the keys are switched back on after."""
    from alembic import command

    cfg = _alembic_config()
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # a no-op inside a transaction, hence before it, on the driver's connection (no BEGIN)
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
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
        conn.commit()  # outside any transaction: a PRAGMA inside one is a no-op
        conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
    except (sa.exc.DBAPIError, sqlite3.Error):
        conn.invalidate()  # a connection without foreign keys never goes back to the pool
