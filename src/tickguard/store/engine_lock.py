"""One engine per journal: the lock a running engine (``tickguard run``, ``tickguard sim``) holds on its journal.

Why: two engines on one journal both restore the same open trades, both watch their stops and both send a trade's
exit when it fires - a double exit, the worst bug this project can have.  Write-ahead and the idempotency keys
do not prevent it: each engine holds the key in its own memory, and IB takes two orders with one ``orderRef``.  So
the second engine is refused at start-up, naming the holder.  Readers (``tickguard trades``, ``report``,
``doctor``) take no lock: a journal is read while its engine runs - but a journal whose schema must be migrated is
migrated only under the lock (``Journal.open``), never under a running engine of another version.

The lock is taken before the journal is read or migrated, and it dies with its holder, so a restart after a
``kill -9`` is never refused by a stale lock:

* SQLite: an exclusive ``flock`` on ``<journal>.lock`` beside the file (POSIX; the kernel drops it when the
  process's descriptor closes).  Named from the file's real path: a relative path, a symlink or another mount of
  its directory reach the same lock.  A journal with several hard links is refused - each name would have a lock
  of its own, and SQLite itself corrupts a database used through two names (its WAL is named after the path,
  sqlite.org/howtocorrupt.html section 2.5).  Renaming or moving a journal while its engine runs is unsupported for
  the same reason.  The file says which process holds it, for the refusal's message; it stays behind and means
  nothing unless locked.  Not the database file itself: closing any descriptor of a SQLite file drops the
  process's SQLite locks on it (POSIX record locks).  Where ``fcntl`` does not exist (Windows) the lock is not
  enforced, and a WARNING says so.
* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on the journal's own connection - the one
  every write goes through.  Keyed by the database and the schema the journal's tables are in (or will be made
  in), so two journals in two schemas of one database do not block each other; a connection that would read the
  tables from one schema and make new ones in another is refused.  The server drops the lock when the session
  ends (``pg_terminate_backend``, an idle-session reaper, a network cut): the journal checks before every COMMIT
  that its connection is still the locked session, and takes the lock again on a new session after a reconnect.
  The session asks the server for TCP keepalives (``tcp_keepalives_*``): an engine whose machine lost power is
  dropped - and its lock released - within about a minute, not after the system's two hours.  A
  transaction-pooling proxy defeats a session lock (it hands the session to others): unsupported, and the fence
  below still stops the older engine.

And the ``Fence``: a lock is a convention its holder cannot see broken (a lock file deleted, a session lost while
another engine started).  Each engine writes a token into the journal at its start and reads it back inside each
of its transactions before the COMMIT: an engine superseded by a later one commits - and so sends - nothing more.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import uuid
from pathlib import Path

import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# the server drops the session of a client that stopped answering after idle + interval * count seconds
SESSION_KEEPALIVES = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


class LockError(Exception):
    """The journal cannot be held for an engine; the message says why."""


class LockHeld(LockError):
    """Another running engine holds the lock; ``holder`` says which, as far as it is known."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def refusal(where: str, holder: str) -> str:
    """The refusal's message (``Journal.open`` raises it as ``JournalInUse``)."""
    return (f"journal {where} is in use by another running tickguard engine ({holder}); two engines on one journal "
            "would both watch its trades and both send an exit when a stop fires - stop the other one first, or "
            "give this one a journal of its own")


def _stamp() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"pid {os.getpid()} on {socket.gethostname()}, since {now}"


SQLITE_HEADER = b"SQLite format 3\x00"


class FileLock:
    """The SQLite journal's lock: ``flock`` on ``<journal>.lock``.  Taken before the journal file is opened."""

    def __init__(self, journal_path: Path, where: str, doing: str = "") -> None:
        try:
            real = journal_path.resolve()  # one lock file whatever the path says (relative, through a symlink)
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise LockError(f"journal path {where} cannot be resolved ({exc})") from None
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None
        if real.is_dir():  # said before a lock file is made beside it
            raise LockError(f"journal path {where} is a directory, not a file")
        if real.is_file() and (links := real.stat().st_nlink) > 1:
            raise LockError(f"journal file {where} has {links} hard links: an engine on another of its names would "
                            "not see this one's lock, and SQLite corrupts a database used through two names - keep "
                            "one name (copy it, or remove the other links) and start again")
        if not real.parent.is_dir():
            raise LockError(f"journal directory {real.parent} does not exist")
        if fcntl is None:
            log.warning("journal %s: this system has no fcntl - a second engine on this journal is not refused", where)
            return
        for _ in range(3):  # again if the lock file was replaced between its open and its lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise LockError(f"journal {where}: cannot open its engine lock file {self.path} ({exc.strerror}); "
                                "the engine needs to write beside its journal") from None
            try:
                if os.pread(fd, len(SQLITE_HEADER), 0) == SQLITE_HEADER:  # never overwrite a database
                    raise LockError(f"journal {where}: its lock file's name {self.path} is taken by a SQLite database "
                                    "(another journal?); it was not touched - rename one of them")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "a process that did not say which"
                    raise LockHeld(holder) from None
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.pwrite(fd, (_stamp() + doing + "\n").encode(), 0)
            except OSError as exc:  # no lock (ENOLCK on some network file systems), a full disk
                os.close(fd)
                raise LockError(f"journal {where}: cannot lock or write its engine lock file {self.path} "
                                f"({exc.strerror})") from None
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return
        raise LockError(f"journal {where}: its lock file {self.path} keeps being replaced; is something deleting it?")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class AdvisoryLock:
    """The PostgreSQL journal's lock: a session-level advisory lock on the journal's own connection."""

    def __init__(self, conn: sa.Connection, where: str) -> None:
        database, creates_in, tables_in = conn.execute(sa.text(
            "SELECT current_database(), current_schema(), (SELECT n.nspname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.oid = to_regclass('alembic_version'))")).one()
        conn.rollback()
        if tables_in is not None and tables_in != creates_in:
            # e.g. a schema named after the user, made after the journal ("$user" comes first in search_path): the
            # journal would be read from one schema and its new tables made in the other - and keyed by the wrong one
            raise LockError(f"journal {where}: its tables are in schema {tables_in!r}, but this connection makes new "
                            f"tables in {creates_in!r} (the first schema of its search_path); put {tables_in!r} first "
                            f"(add ?options=-csearch_path%3D{tables_in} to the URL) - nothing was touched")
        self.key = advisory_key(f"{database}/{tables_in or creates_in or ''}")
        self._conn: sa.Connection | None = None
        self._session: object = None
        self._take(conn)
        self._conn = conn

    def _take(self, conn: sa.Connection) -> None:
        """Lock on ``conn``'s session, or raise ``LockHeld`` naming the holder."""
        try:
            self._lock_session(conn)
        except LockHeld:
            conn.rollback()
            raise
        conn.commit()  # the lock is the session's: it outlives this transaction; the SETs need the commit

    def confirm(self, conn: sa.Connection) -> None:
        """Before a COMMIT: the journal's connection must still be the session that holds the lock.  A reconnect
        (the session was ended under the engine) takes it again on the new session - inside the transaction about
        to commit, its SETs committed with it - or raises ``LockHeld`` if another engine has it now (one that came
        and went meanwhile is the ``Fence``'s to catch).  An identity check while nothing changed: no round trip."""
        if conn.connection.driver_connection is self._session:
            return
        log.warning("journal connection is a new database session (the last one ended); taking the engine lock again")
        self._lock_session(conn)

    def _lock_session(self, conn: sa.Connection) -> None:
        """The lock and the keepalives on ``conn``'s session (uncommitted SETs), or ``LockHeld`` naming the holder."""
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
            raise LockHeld(self._holder(conn))
        for name, seconds in SESSION_KEEPALIVES.items():
            conn.execute(sa.text(f"SET {name} = {int(seconds)}"))
        self._session = conn.connection.driver_connection

    def _holder(self, conn: sa.Connection) -> str:
        row = conn.execute(sa.text(
            "SELECT a.pid, a.client_addr, a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = 0 "
            "AND l.objid = :k AND l.objsubid = 1 AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"), {"k": self.key}).first()
        if row is None:
            return f"advisory lock {self.key}"
        pid, addr, app, since = row  # another role's session: the server may hide all but its pid
        started = f", since {since:%Y-%m-%d %H:%M:%S%z}" if since is not None else ""
        return (f"database session {pid} from {addr or 'a local socket or a hidden address'}"
                f"{f' ({app})' if app else ''}{started}; advisory lock {self.key}; if that engine's machine is known "
                f"to be dead, the server drops its session within about a minute, or at once with SELECT "
                f"pg_terminate_backend({pid}) - never while that engine may still be running")

    def release(self) -> None:
        """Before the journal's connection closes (closing it would drop the lock too)."""
        if self._conn is not None:
            try:
                self._conn.rollback()
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            except sa.exc.SQLAlchemyError:  # the session is gone: so is its lock
                pass
            finally:
                self._conn = None


class Fence:
    """This engine's turn on the journal: a token written at its start (under the lock) and read back inside each of
    its transactions, just before the COMMIT.  Why, beside the lock: a lock is a convention its holder cannot see
    broken - a deleted or replaced lock file, a PostgreSQL session ended and another engine started meanwhile, a
    transaction-pooling proxy handing the locked session to someone else.  The token is in the journal itself: an
    engine that started later replaced it, and from then on every commit of the earlier one is refused
    (``LockHeld``) and rolled back, so nothing it decides is sent.  The read is inside the write transaction: on
    SQLite the writer's lock, on PostgreSQL ``FOR SHARE``, make the later engine's start wait for that commit, so
    the later one reads what the earlier one committed before its own start."""

    NAME = "engine_token"

    def __init__(self, token: str, sql: str) -> None:
        self.token = token
        self.sql = sql

    def read(self, engine: sa.Engine) -> object:
        """The token now, on a connection of its own (the journal's may be in a failed transaction)."""
        with engine.connect() as conn:
            return conn.exec_driver_sql(self.sql.removesuffix(" FOR SHARE")).scalar()

    @classmethod
    def start(cls, conn: sa.Connection) -> Fence:
        """Write a new token (the previous engine's commits are refused from now on) and commit it.  Called by the
        engine once it is connected and about to read the journal (``Journal.take_over``): a start that fails
        before that point (a broker refusing its client id) leaves a running engine alone."""
        token = f"{uuid.uuid4().hex} {_stamp()}"[:200]
        conn.execute(sa.text("INSERT INTO journal_meta (name, value) VALUES (:n, :v) "
                             "ON CONFLICT (name) DO UPDATE SET value = excluded.value"), {"n": cls.NAME, "v": token})
        conn.commit()
        lock = " FOR SHARE" if conn.dialect.name == "postgresql" else ""
        return cls(token, f"SELECT value FROM journal_meta WHERE name = '{cls.NAME}'{lock}")

    def check(self, value: object) -> None:
        """``value``: what ``sql`` read inside the transaction about to commit."""
        if value != self.token:
            raise Superseded(str(value).partition(" ")[2] if value else "an engine that did not say which")


class Superseded(LockHeld):
    """Another engine took the journal over after this one started (its token replaced this one's)."""


def superseded(where: str, holder: str) -> str:
    """A superseded engine's message (``Journal`` raises it as ``JournalInUse``)."""
    return (f"journal {where} was taken over by another tickguard engine after this one started ({holder}): this "
            "engine's commits are refused from now on, so it sends nothing more and stops - the other one now holds "
            "the journal's trades.  If that is not what you meant, stop every engine on this journal and start one")


def advisory_key(scope: str) -> int:
    """A positive 31-bit key from the journal's database and schema (pg_locks shows it as ``objid``, with
    ``classid`` 0; advisory locks are per database, the schema is in the key)."""
    return int.from_bytes(hashlib.sha256(f"tickguard:{scope}".encode()).digest()[:4], "big") & 0x7FFF_FFFF


def temporary(path_or_conn: Path | sa.Connection, where: str) -> FileLock | AdvisoryLock:
    """The lock taken for a moment (a reader migrating a journal's schema: never under a running engine)."""
    if isinstance(path_or_conn, Path):
        return FileLock(path_or_conn, where, " (a reader migrating the journal's schema)")
    return AdvisoryLock(path_or_conn, where)
