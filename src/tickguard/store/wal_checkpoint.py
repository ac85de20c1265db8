"""SQLite's write-ahead log is copied into the database file by a thread of its own, never by a commit.

Why: SQLite checkpoints automatically when a commit finds the log past 1,000 pages - inside that commit, on the
thread that made it.  The journal's commits are the engine's: the copy (and, at ``synchronous`` NORMAL or FULL,
its fsyncs) held the event loop 15-22 ms every few thousand writes, with exit orders waiting behind it
(bench/wire_to_wire.py: most of the p99).  So the journal's connections turn the automatic checkpoint off
(``PRAGMA wal_autocheckpoint=0``) and this thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own
every ``interval_s``.  A passive checkpoint never waits for the writer or a reader and never blocks them: it copies
what it can, and the writer starts the log over once everything is copied.  ``sqlite3`` releases the GIL while
SQLite works, so the copy and its fsyncs cost the engine's thread nothing.

Durability is unchanged: a commit is durable when it is in the log (fsynced at FULL, written at NORMAL - which
survives any process crash); the checkpoint only moves committed pages into the main file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class WalCheckpointer:
    """A daemon thread that checkpoints one SQLite database's log every ``interval_s`` until ``stop``."""

    def __init__(self, path: Path, synchronous: str, interval_s: float = 0.5) -> None:
        self.path = path
        self.synchronous = synchronous
        self.interval_s = interval_s
        self.checkpoints = 0  # passes that copied something (for tests and curiosity)
        self.log_frames = 0  # frames in the log at the last pass (the journal's ``_ready`` reads it)
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"journal checkpoint {path.name}", daemon=True)

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread (its checkpoint under way finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            log.error("journal %s: the log checkpoint thread cannot open it (%s); SQLite will not copy the log into "
                      "the database file until tickguard restarts", self.path, exc)
            return
        wal = self.path.with_name(self.path.name + "-wal")
        seen = None
        try:
            con.execute(f"PRAGMA synchronous={self.synchronous}")  # the checkpoint syncs as the journal does
            con.execute("PRAGMA wal_autocheckpoint=0")
            while not self._stop.wait(self.interval_s):
                try:
                    stamp = wal.stat().st_mtime_ns
                except OSError:
                    continue  # no log (yet, or any more): nothing to copy
                if stamp != seen:  # written since the last pass: a quiet journal costs a stat a pass
                    seen = stamp
                    self.checkpoint(con)
        finally:
            con.close()

    def checkpoint(self, con: sqlite3.Connection) -> None:
        try:
            _busy, frames, copied = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the file went away, the disk is full: said once, tried again later
            self.failed += 1
            if self.failed == 1:
                log.error("journal %s: checkpointing its log failed (%s); trying again every %gs", self.path, exc,
                          self.interval_s)
            return
        self.log_frames = frames
        if copied > 0:
            self.checkpoints += 1
