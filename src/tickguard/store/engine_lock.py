"""One engine per journal: the lock a running engine (``tickguard run``, ``tickguard sim``) holds on its journal.

Why: two engines on one journal both restore the same open trades, both watch their stops and both send a trade's
exit when it fires - a double exit, the worst bug this project can have.  Write-ahead and the idempotency keys
do not prevent it: each engine holds the key in its own memory, and IB takes two orders with one ``orderRef``.  So
the second engine is refused at start-up, naming the holder.  Readers (``tickguard trades``, ``report``,
``doctor``) take no lock: a journal is read while its engine runs.

The lock dies with its holder, whatever the death - a ``kill -9`` or a power cut leaves nothing to clean up, so a
restart after a crash is never refused by a stale lock:

* SQLite: an exclusive ``flock`` on ``<journal>.lock`` beside the file (POSIX; the kernel drops it when the
  process's descriptor closes).  The file says which process holds it, for the refusal's message; it stays
  behind and means nothing unless locked.  Where ``fcntl`` does not exist (Windows) the lock is not enforced,
  and a WARNING says so.
* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection kept open for the
  engine's life; the server drops it when the session ends (the connection closed, or lost with its process).
  Its key comes from the journal's id, so two journals in one database do not block each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
from pathlib import Path

import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class LockHeld(Exception):
    """Another running engine holds the lock; ``holder`` says which, as far as it is known."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def refusal(where: str, holder: str) -> str:
    """The refusal's message (``Journal.lock_for_engine`` raises it as ``JournalInUse``)."""
    return (f"journal {where} is in use by another running tickguard engine ({holder}); two engines on one journal "
            "would both watch its trades and both send an exit when a stop fires - stop the other one first, or "
            "give this one a journal of its own")


def _stamp() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"pid {os.getpid()} on {socket.gethostname()}, since {now}"


class FileLock:
    """The SQLite journal's lock: ``flock`` on ``<journal>.lock``."""

    def __init__(self, journal_path: Path, where: str) -> None:
        real = journal_path.resolve()  # one lock file whatever the path says (relative, through a symlink)
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None
        if fcntl is None:
            log.warning("journal %s: this system has no fcntl - a second engine on this journal is not refused", where)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "a process that did not say which"
            os.close(fd)
            raise LockHeld(holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_stamp() + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def advisory_key(journal_id: str) -> int:
    """A positive 31-bit key from the journal's id (pg_locks shows it as ``objid``, with ``classid`` 0)."""
    return int.from_bytes(hashlib.sha256(f"tickguard:{journal_id}".encode()).digest()[:4], "big") & 0x7FFF_FFFF


class AdvisoryLock:
    """The PostgreSQL journal's lock: a session-level advisory lock on a connection of its own."""

    def __init__(self, engine: sa.Engine, journal_id: str) -> None:
        self.key = advisory_key(journal_id)
        self._conn: sa.Connection | None = engine.connect()
        try:
            got = self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            self._conn.commit()  # the lock is the session's: it outlives this transaction
            if not got:
                raise LockHeld(self._holder())
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _holder(self) -> str:
        assert self._conn is not None
        row = self._conn.execute(sa.text(
            "SELECT a.pid, a.client_addr, a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = 0 "
            "AND l.objid = :k AND l.objsubid = 1 AND l.granted"), {"k": self.key}).first()
        self._conn.rollback()
        if row is None:
            return f"advisory lock {self.key}"
        pid, addr, app, since = row
        return (f"database session {pid} from {addr or 'a local socket'}{f' ({app})' if app else ''}, since "
                f"{since:%Y-%m-%d %H:%M:%S%z}; advisory lock {self.key}")

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            except sa.exc.DBAPIError:  # the session is gone: so is its lock
                pass
            finally:
                self._conn.close()
                self._conn = None
