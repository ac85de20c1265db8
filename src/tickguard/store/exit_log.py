"""The SQLite journal's exit log: an exit's journal writes made durable by one append, so that its order reaches the
wire without waiting for SQLite's COMMIT.

Why: between a crossing and its exit order on the wire the journal must make the exit's writes (its order row,
its events) durable - write-ahead - and SQLite's COMMIT of them, with its fence read, was the largest single
cost of that path that tickguard could remove (``bench/exit_path.py``: fence ~20 us, COMMIT ~70 us, cold; the
wire-to-wire ratio to a bare ``ib_async`` client fell from ~2.1-2.6x to ~1.7-1.9x with the COMMIT skipped).
Here the rows those writes executed (the SQL and the values SQLite was given, byte for byte) are appended to a
file of the engine's own in one ``write``, and the exit is released; SQLite's COMMIT of the same transaction - which
also records the record's sequence number in ``journal_meta`` - follows at the end of the engine's step, after the
send.

Durability is SQLite's own with ``synchronous=NORMAL`` (the journal's default): a record, like a WAL commit
there, is in the operating system's hands once ``write`` returns - it survives any process crash (``kill -9``),
not a power cut.  With FULL or EXTRA the exit log is not used: every exit waits for SQLite's synced COMMIT.

Exactly once: a record is applied to the journal either by the commit of the transaction that wrote it (with its
sequence number) or, after a crash, by ``apply_pending`` - which runs under SQLite's write lock, reads the
committed sequence number in the same transaction, applies only the records past it, and records the last.  The
engine's write lock on the journal is held from its first write of the transaction (the exit's order row) until
that commit, so an engine starting on the journal (its token write needs that lock) reads either the committed
rows or the record, never neither.

Each engine writes a file of its own (``<journal>.exits-<random>``), locked (``flock``) while it lives: a file is
removed only by someone who could lock it - its writer is dead - and only after its records are committed.  A
file names the journal it belongs to (its id), so a file left beside a journal that was replaced is refused, by
name, rather than applied to the wrong journal.

Record: magic, payload length, CRC-32 of the payload, sequence number; the payload is the writes
``[(sql, values | [values, ...]), ...]`` in ``marshal``'s format (version 4) - only SQLite's own value types (str,
int, float, bytes, None), as bound, which ``marshal`` holds exactly and fastest (~1 us an exit, against ~6 us for
JSON).  Unlike pickle, loading it runs nothing, and what is loaded is checked to be only that shape.
A record cut short at the end of a file (a write the machine lost, never the process: one ``write`` of a regular
file is not torn by a kill) is ignored; a damaged record with records after it is corruption and refused.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import sqlite3
import struct
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no exit log (the journal commits every exit)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

Op = tuple[str, Any]  # (sql, values) or (sql, [values, ...]) for executemany
_FILE_MAGIC = b"tickguard exit log 1\n"
_RECORD = struct.Struct("<4sIIQ")  # magic, payload length, crc32, sequence number
_RECORD_MAGIC = b"TGX1"
SEQ_NAME = "exit_log_seq"  # journal_meta: the last record committed to the journal
_SET_SEQ = ("INSERT INTO journal_meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value")
_TRUNCATE_AT = 256 * 1024  # a log holding only committed records is emptied past this size (after a commit)


BUSY = ("another process is writing to the journal (an engine still running on it, whose lock file was removed?): "
        "stop it, then start again")


class ExitLogError(RuntimeError):
    """An exit log cannot be written, read or applied (the message names the file and what was wrong)."""


def usable() -> bool:
    """Whether this system can keep exit logs (their files are locked with ``flock``)."""
    return fcntl is not None


def files_of(journal: Path) -> list[Path]:
    """The exit logs beside ``journal`` (any engine's, dead or alive)."""
    real = journal.resolve()
    return sorted(real.parent.glob(f"{real.name}.exits-*"))


class ExitLog:
    """This engine's exit log: appended by the journal at an exit's commit, emptied once a commit holds it all."""

    def __init__(self, journal: Path, journal_id: str) -> None:
        real = journal.resolve()
        self.path = real.with_name(f"{real.name}.exits-{uuid.uuid4().hex[:16]}")
        head = _FILE_MAGIC + journal_id.encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ExitLogError(f"cannot create the exit log {self.path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while this engine lives: see the module's docstring
            if os.write(fd, head) != len(head):
                raise OSError(0, "short write")
        except OSError as exc:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise ExitLogError(f"cannot write the exit log {self.path} ({exc.strerror or exc})") from None
        self._fd: int | None = fd
        self._empty = self._size = len(head)
        self.records = 0  # appended by this engine

    def append(self, seq: int, ops: Sequence[Op]) -> None:
        """One record, in one ``write``; on failure the file is cut back to what it held (no half record stays)."""
        record = self.encode(seq, ops)
        fd = self._fd
        if fd is None:
            raise ExitLogError(f"the exit log {self.path} is closed")
        try:
            written = os.write(fd, record)
        except OSError as exc:
            self._cut()
            raise ExitLogError(f"cannot append to the exit log {self.path} ({exc.strerror})") from None
        if written != len(record):
            self._cut()
            raise ExitLogError(f"cannot append to the exit log {self.path} (short write: disk full?)")
        self._size += written
        self.records += 1

    @staticmethod
    def encode(seq: int, ops: Sequence[Op]) -> bytes:
        """Record ``seq`` holding ``ops``, as ``append`` writes it (the exit rehearsal encodes one and writes it
        nowhere: runtime/exit_rehearsal.py)."""
        try:
            payload = marshal.dumps(ops, 4)
        except ValueError:  # a subclass of a plain type (an enum member): SQLite bound it as that type
            try:
                payload = marshal.dumps([(sql, _plain(values)) for sql, values in ops], 4)
            except ValueError as exc:
                raise ExitLogError(f"a value of this exit's writes cannot be logged ({exc}): not str, int, float, "
                                   "bytes or None") from None
        return _RECORD.pack(_RECORD_MAGIC, len(payload), zlib.crc32(payload), seq) + payload

    def committed(self) -> None:
        """Every record is in the journal now (its commit returned): past a size, the file is emptied."""
        if self._size >= _TRUNCATE_AT and self._fd is not None:
            try:
                os.ftruncate(self._fd, self._empty)
                self._size = self._empty
            except OSError as exc:  # the records are committed: a log that stays long costs only its replay skip
                log.warning("cannot empty the exit log %s (%s)", self.path, exc.strerror)

    def _cut(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)  # type: ignore[arg-type]
        except OSError:
            log.error("the exit log %s may end in a half record (it is ignored when the log is applied)", self.path)

    def close(self, remove: bool) -> None:
        """Close; ``remove`` when every record is committed (otherwise the next start applies what is missing)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def read(path: Path) -> tuple[str, list[tuple[int, list[Op]]]]:
    """A log's journal id and records, in order (a record cut short at the end is left out, with a warning)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExitLogError(f"cannot read the exit log {path} ({exc.strerror})") from None
    if not data.startswith(_FILE_MAGIC) or b"\n" not in data[len(_FILE_MAGIC):]:
        if len(data) <= len(_FILE_MAGIC) + 40 and _FILE_MAGIC.startswith(data[:len(_FILE_MAGIC)]):
            return "", []  # its writer died while making it: it holds nothing
        raise ExitLogError(f"{path} is not a tickguard exit log (its first bytes are not one's); move it aside")
    id_end = data.index(b"\n", len(_FILE_MAGIC))
    journal_id = data[len(_FILE_MAGIC):id_end].decode(errors="replace")
    records: list[tuple[int, list[Op]]] = []
    at = id_end + 1
    while at < len(data):
        whole = at + _RECORD.size <= len(data)
        magic, length, crc, seq = _RECORD.unpack_from(data, at) if whole else (b"", 0, 0, 0)
        end = at + _RECORD.size + length
        payload = data[at + _RECORD.size:end]
        if whole and magic == _RECORD_MAGIC and end <= len(data) and zlib.crc32(payload) == crc:
            records.append((seq, _ops(payload, path, at)))
            at = end
            continue
        if not whole or end >= len(data) or (magic != _RECORD_MAGIC and not data[at:].strip(b"\0")):
            log.warning("exit log %s ends in a record cut short (%d bytes): ignored - its write never completed",
                        path, len(data) - at)
            break
        raise ExitLogError(f"exit log {path} is damaged at byte {at} (record {len(records) + 1} fails its check, "
                           "with records after it); refusing to apply it - move it aside and check the journal")
    return journal_id, records


_VALUE = (str, int, float, bytes, type(None))


def _plain(values: Any) -> Any:
    """Values as the plain types SQLite stored them as (``str(StrEnum member)`` is its value, as bound)."""
    if isinstance(values, list):
        return [_plain(v) for v in values]
    return tuple(v if type(v) in _VALUE or v is None else _as_plain(v) for v in values)


def _as_plain(value: Any) -> Any:
    # the value as the type itself holds it, never a subclass's own conversion (``__int__``, ``__float__``)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes(memoryview(value))
    return value  # refused by marshal: ExitLog.append says which


def _ops(payload: bytes, path: Path, at: int) -> list[Op]:
    """A record's writes, checked to be only SQL text with SQLite values (never code: see the module's docstring)."""
    try:
        ops = marshal.loads(payload)
    except (ValueError, EOFError, TypeError) as exc:
        raise ExitLogError(f"exit log {path}: the record at byte {at} cannot be read ({exc})") from None

    def row(values: Any) -> bool:
        return isinstance(values, tuple) and all(isinstance(v, _VALUE) for v in values)

    if not isinstance(ops, list) or not all(
            isinstance(op, tuple) and len(op) == 2 and isinstance(op[0], str)
            and (row(op[1]) or (isinstance(op[1], list) and all(row(v) for v in op[1]))) for op in ops):
        raise ExitLogError(f"exit log {path}: the record at byte {at} is not a list of writes; refusing to apply it")
    return ops


def committed_seq(con: sqlite3.Connection) -> int:
    row = con.execute("SELECT value FROM journal_meta WHERE name = ?", (SEQ_NAME,)).fetchone()
    return int(row[0]) if row and row[0] else 0


def set_seq(con: sqlite3.Connection, seq: int) -> None:
    con.execute(_SET_SEQ, (SEQ_NAME, str(seq)))


def execute(con: sqlite3.Connection, ops: Sequence[Op]) -> None:
    """Run a record's writes as they were first run."""
    for sql, values in ops:
        if isinstance(values, list):
            con.executemany(sql, values)
        else:
            con.execute(sql, values)


def run_past(con: sqlite3.Connection, records: Sequence[tuple[int, list[Op]]], done: int) -> None:
    """Inside a transaction holding the write lock: run the records (in order) numbered past ``done`` - the journal's
    committed number, read in that transaction - and record the last one's number."""
    last = done
    for seq, ops in records:
        if seq > done:
            execute(con, ops)
            last = seq
    if last > done:
        set_seq(con, last)


def apply_pending(con: sqlite3.Connection, journal: Path, where: str) -> int:
    """Apply every exit log's records the journal lacks, in one transaction under SQLite's write lock (``BEGIN
    IMMEDIATE``: an engine's open transaction commits first, and its records with it), then remove the logs of
    dead writers.  ``con``: a driver connection outside any transaction.  Returns how many records were applied."""
    paths = files_of(journal)
    if not paths:
        return 0
    try:
        con.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise ExitLogError(f"its exit logs cannot be applied: {exc} - {BUSY}") from None
    try:
        own = con.execute("SELECT value FROM journal_meta WHERE name = 'journal_id'").fetchone()
        done = committed_seq(con)
        pending: list[tuple[int, list[Op]]] = []
        for path in paths:
            journal_id, records = read(path)
            if records and (own is None or journal_id != own[0]):
                raise ExitLogError(f"exit log {path} belongs to another journal (id {journal_id or 'unknown'}, "
                                   f"not {own[0] if own else 'none'}): refusing to apply it - move it aside")
            pending += [r for r in records if r[0] > done]
        pending.sort(key=lambda r: r[0])
        seqs = [seq for seq, _ in pending]
        if len(set(seqs)) != len(seqs):
            raise ExitLogError(f"the exit logs of journal {where} hold one record number twice ({paths}); refusing "
                               "to apply them - move them aside and check the journal")
        run_past(con, pending, done)
        con.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        if isinstance(exc, Exception) and not isinstance(exc, ExitLogError):
            raise ExitLogError(f"the exit logs of journal {where} cannot be applied ({type(exc).__name__}: {exc}); "
                               "the journal was not changed") from None
        raise
    if pending:
        log.warning("journal %s: %d exit record(s) an engine logged before it stopped were applied (%s)", where,
                    len(pending), ", ".join(p.name for p in paths))
    for path in paths:  # committed now: a log its writer no longer holds is done
        _remove_if_dead(path)
    return len(pending)


def _remove_if_dead(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return  # a running engine's
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


class ExitRecords:
    """The journal's side of its exit log: the records of its open SQLite transaction (appended, not yet committed
    with it), and the sequence number the journal is at."""

    def __init__(self, exit_log: ExitLog, seq: int) -> None:
        self.log = exit_log
        self.seq = seq  # the last record appended (the journal's, as committed, when the log was opened)
        self.open: list[tuple[int, list[Op]]] = []  # appended, their transaction not committed yet

    def append(self, ops: list[Op]) -> None:
        self.log.append(self.seq + 1, ops)
        self.seq += 1
        self.open.append((self.seq, ops))

    def seal(self, con: sqlite3.Connection) -> None:
        """Inside the transaction about to commit: it holds the open records, so their number goes with them."""
        if self.open:
            set_seq(con, self.seq)

    def committed(self) -> None:
        self.open.clear()
        self.log.committed()

    def reapply(self, con: sqlite3.Connection, check: Any) -> None:
        """The open records again, after their transaction was rolled back (a later write of it refused, its commit
        failed): in a transaction of their own, under the write lock, ``check`` (the fence) read inside it.  They are
        on the wire; the journal must hold them."""
        records, self.open = self.open, []
        try:
            con.execute("BEGIN IMMEDIATE")
            check(con)
            run_past(con, records, committed_seq(con))
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            self.open = records
            raise
