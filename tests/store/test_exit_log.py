"""The SQLite journal's exit log (store/exit_log.py): an exit's writes durable by one append, committed to the
journal after the send - and applied exactly once, by that commit or by the next start after a kill."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_journal import order_row, trade_row

from tickguard.store import exit_log
from tickguard.store.journal import IDLE_LOCK_NS, Journal, JournalError, JournalInUse


def idle(journal: Journal) -> None:
    """An engine step that writes nothing, a while after its last write: it lets go of SQLite's write lock, held
    between its commits (Journal._ready, _release_idle_lock)."""
    now = journal.clock() + IDLE_LOCK_NS + 1
    journal.clock = lambda: now
    with journal.batch():
        pass


def engine_journal(path: Path, **kw) -> Journal:
    journal = Journal.open(path, for_engine=True, **kw)
    journal.take_over()  # as Engine.start does: the exit log is the engine's from here
    return journal


def with_a_trade(path: Path) -> tuple[Journal, list]:
    """An engine's journal holding trade T00001, and the receipts its commits issue from now on."""
    journal = engine_journal(path)
    journal.insert_trade(trade_row())
    receipts: list = []
    journal.after_commit.append(receipts.append)
    return journal, receipts


def seen(path: Path) -> tuple[list[str], str | None]:
    """What another connection reads: the order keys committed, and the exit log's number."""
    con = sqlite3.connect(path)
    try:
        keys = [r[0] for r in con.execute("SELECT order_key FROM orders ORDER BY order_key")]
        seq = con.execute("SELECT value FROM journal_meta WHERE name = 'exit_log_seq'").fetchone()
        return keys, seq[0] if seq else None
    finally:
        con.close()


def records(path: Path) -> list[tuple[int, list]]:
    out: list[tuple[int, list]] = []
    for log in exit_log.files_of(path):
        out += exit_log.read(log)[1]
    return out


def test_an_exits_commit_is_one_record_and_the_steps_commit_puts_it_in_the_journal(tmp_path):
    path = tmp_path / "j.db"
    journal, receipts = with_a_trade(path)
    with journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        at = journal.position
        journal.commit_now(early=True)
        assert receipts[-1].covers(at)  # released: durable in the log
        assert seen(path) == ([], None)  # not yet in SQLite
        assert [seq for seq, _ in records(path)] == [1]
        ops = records(path)[0][1]
        assert len(ops) == 1 and ops[0][0].startswith("INSERT INTO orders")
        journal.update_order("tg:T00001:stop", status="submitted", broker_order_id=7)  # the send's note
    assert seen(path) == (["tg:T00001:stop"], "1")
    journal.close()
    assert exit_log.files_of(path) == []  # everything committed: a clean stop leaves no log


CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_journal import order_row
    from tickguard.store.journal import Journal
    journal = Journal.open({path!r}, for_engine=True)
    journal.take_over()
    with journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        journal.commit_now(early=True)
        if {point!r} == "logged":
            print("LOGGED", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    print("COMMITTED", flush=True)  # the record is in the journal and still in the log
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("point", ["logged", "committed"])
def test_a_kill_after_an_exits_record_loses_nothing_and_the_record_is_applied_once(tmp_path, point):
    path = tmp_path / "j.db"
    first = Journal.open(path, for_engine=True)
    first.insert_trade(trade_row())
    first.close()
    child = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent), path=str(path),
                                                               point=point)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.strip() == point.upper()
    assert seen(path) == ((["tg:T00001:stop"], "1") if point == "committed" else ([], None))
    assert [seq for seq, _ in records(path)] == [1]
    again = engine_journal(path)  # applied (or skipped: already in the journal) before anything reads it
    assert [o["order_key"] for o in again.orders_of(["T00001"])] == ["tg:T00001:stop"]
    assert seen(path) == (["tg:T00001:stop"], "1")
    assert [seq for seq, _ in records(path)] == []  # the dead engine's log is gone, once applied
    with again.batch():  # this engine numbers on from the journal's record
        again.insert_order(order_row("tg:T00001:target", status="pending"))
        again.commit_now(early=True)
        assert [seq for seq, _ in records(path)] == [2]
    again.close()
    assert seen(path) == (["tg:T00001:stop", "tg:T00001:target"], "2")


def test_a_reader_applies_a_dead_engines_log_but_never_a_running_engines(tmp_path):
    path = tmp_path / "j.db"
    first = Journal.open(path, for_engine=True)
    first.insert_trade(trade_row())
    first.close()
    child = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent), path=str(path),
                                                               point="logged")], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    running = engine_journal(path)  # applies the dead one's log; its own log is open and locked
    with running.batch():
        running.insert_order(order_row("tg:T00001:target", status="pending"))
        running.commit_now(early=True)
        reader = Journal.open(path, create=False)  # a running engine holds the journal: its log is left alone
        assert [seq for seq, _ in records(path)] == [2]
        assert sorted(o["order_key"] for o in reader.orders_of(["T00001"])) == ["tg:T00001:stop"]
        reader.close()
    running.close()
    assert seen(path) == (["tg:T00001:stop", "tg:T00001:target"], "2")


def test_a_read_after_an_exits_record_leaves_the_exit_in_its_transaction(tmp_path):
    """A read with nothing written since the last commit ends its transaction (its snapshot, ``Journal._read``):
    after an exit's record the transaction holds that exit, and must stay."""
    path = tmp_path / "j.db"
    journal, _ = with_a_trade(path)
    with journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        journal.commit_now(early=True)
        assert [o["order_key"] for o in journal.orders_of(["T00001"])] == ["tg:T00001:stop"]
    assert seen(path) == (["tg:T00001:stop"], "1")
    journal.close()


def test_a_write_refused_after_an_exits_record_voids_itself_only_and_the_exit_stays(tmp_path):
    path = tmp_path / "j.db"
    journal, _ = with_a_trade(path)
    with pytest.raises(JournalError, match="refused"), journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        journal.commit_now(early=True)  # on the wire from here
        journal.insert_order(order_row("tg:T00001:target", status="pending"))
        later = journal.position
        with pytest.raises(Exception, match="UNIQUE"):
            journal.insert_trade(trade_row())  # refused (a write that runs at once); the caller went on
    assert seen(path) == (["tg:T00001:stop"], "1")  # the exit again, in a transaction of its own
    assert journal.receipt().void(later)
    journal.close()
    assert exit_log.files_of(path) == []


def test_an_exits_order_row_runs_after_its_record_and_a_row_sqlite_refuses_then_stops_the_journal_loudly(tmp_path):
    """The order row is bound before the record (a value refused there stops the exit before anything) and run
    by SQLite after the send.  A row SQLite refuses then (the executor refuses a key used twice before it gets
    here: a fault) cannot be undone: a JournalError naming the log, and a start refuses the log rather than
    apply half of it - the operator moves it aside, and recovery adopts the order at the broker by its key."""
    path = tmp_path / "j.db"
    journal, _ = with_a_trade(path)
    journal.insert_order(order_row("tg:T00001:stop", status="pending"))
    with pytest.raises(JournalError, match=r"exits on the wire could not be committed .*UNIQUE.*exit log"), \
            journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))  # bound only: no error yet
        journal.commit_now(early=True)
        assert [seq for seq, _ in records(path)] == [1]  # released
        journal.orders_of(["T00001"])  # the next statement runs it
    journal.close()
    with pytest.raises(JournalError, match="exit logs of journal .* cannot be applied .*UNIQUE"):
        Journal.open(path, for_engine=True)


def test_a_superseded_engine_logs_no_exit(tmp_path):
    path = tmp_path / "j.db"
    first = engine_journal(path)
    first.insert_trade(trade_row())
    (tmp_path / "j.db.lock").unlink()  # its lock broken: the next engine gets one of its own
    idle(first)
    second = Journal.open(path, for_engine=True)
    assert len(exit_log.files_of(path)) == 1  # the first's log: its writer lives (it may append until fenced)
    second.take_over()
    with pytest.raises(JournalInUse, match="was taken over"), first.batch():
        first.insert_order(order_row("tg:T00001:stop", status="pending"))
        first.commit_now(early=True)
    assert records(path) == []
    assert seen(path) == ([], None)
    first.close()
    second.close()


@pytest.mark.parametrize("how", [{"synchronous": "FULL"}, {"exit_log": False}])
def test_without_the_exit_log_an_exit_waits_for_sqlites_commit(tmp_path, how):
    path = tmp_path / "j.db"
    journal = engine_journal(path, **how)
    journal.insert_trade(trade_row())
    with journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        journal.commit_now(early=True)
        assert seen(path) == (["tg:T00001:stop"], None)
    assert exit_log.files_of(path) == []
    journal.close()


def _log_with(path: Path, journal_id: str, *payloads: bytes) -> Path:
    log = path.with_name(path.name + ".exits-0123456789abcdef")
    log.write_bytes(b"tickguard exit log 1\n" + journal_id.encode() + b"\n" + b"".join(payloads))
    return log


def _record(seq: int, ops: list) -> bytes:
    import marshal
    import struct
    import zlib

    payload = marshal.dumps(ops, 4)
    return struct.pack("<4sIIQ", b"TGX1", len(payload), zlib.crc32(payload), seq) + payload


def test_a_record_cut_short_is_ignored_and_a_damaged_or_foreign_log_is_refused_by_name(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal.open(path, for_engine=True)
    journal.insert_trade(trade_row())
    jid = journal.journal_id
    journal.close()
    good = _record(1, [("INSERT INTO journal_meta (name, value) VALUES (?, ?)", ("probe", "1"))])
    log = _log_with(path, jid, good, _record(2, [("DELETE FROM trades", ())])[:-3])  # the second cut short
    Journal.open(path, for_engine=True).close()
    assert not log.exists()
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM journal_meta WHERE name = 'probe'").fetchone() == ("1",)
    assert con.execute("SELECT count(*) FROM trades").fetchone() == (1,)
    con.close()

    damaged = bytearray(_record(3, [("DELETE FROM trades", ())]))
    damaged[-2] ^= 0xFF
    log = _log_with(path, jid, bytes(damaged), _record(4, [("DELETE FROM trades", ())]))
    with pytest.raises(JournalError, match=f"exit log {log}.* is damaged at byte"):
        Journal.open(path, for_engine=True)
    log.unlink()
    log = _log_with(path, "another-journal", _record(5, [("DELETE FROM trades", ())]))
    with pytest.raises(JournalError, match="belongs to another journal"):
        Journal.open(path, for_engine=True)
    log.write_bytes(b"tickguard exit log 1\n" + jid.encode() + b"\n" + _record(6, [("DELETE FROM trades", (1,))]))
    with pytest.raises(JournalError, match="cannot be applied .*the journal was not changed"):
        Journal.open(path, for_engine=True)
    log.write_bytes(b"tickguard exit log 1\n" + jid.encode() + b"\n"
                    + _record(7, [("DELETE FROM trades", (compile("1", "x", "eval"),))]))
    with pytest.raises(JournalError, match="cannot be read|not a list of writes"):
        Journal.open(path, for_engine=True)
    log.unlink()
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM trades").fetchone() == (1,)
    con.close()


def test_an_exits_fence_is_read_under_the_write_lock_so_no_engine_takes_over_before_its_record_commits(
        tmp_path, monkeypatch):
    """An exit whose writes are all deferred has run no statement that takes SQLite's write lock: its fence read
    takes it (``_LOCKING_READ``).  Read without it, another engine could take the journal over between that read
    and the record - and start without the exit the first one then sends."""
    import tickguard.store.journal_open as journal_open

    monkeypatch.setattr(journal_open, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "j.db"
    first = engine_journal(path)
    first.insert_trade(trade_row())
    idle(first)  # it let go of the lock: its next transaction has not written yet
    (tmp_path / "j.db.lock").unlink()
    second = Journal.open(path, for_engine=True)
    real = first._exits.append
    tried = []

    def append(ops):  # between the first's fence read and its record: the second tries to take over
        with pytest.raises(JournalError, match="another process is writing to the journal"):
            second.take_over()
        tried.append(True)
        real(ops)

    monkeypatch.setattr(first._exits, "append", append)
    with first.batch():
        first.insert_order(order_row("tg:T00001:stop", status="pending"))
        first.commit_now(early=True)
    assert tried and seen(path) == (["tg:T00001:stop"], "1")
    second.close()
    first.close()


@pytest.mark.parametrize(("journal_settings", "logged"), [({}, True), ({"exit_log": False}, False),
                                                          ({"sqlite_synchronous": "FULL"}, False)])
def test_the_engines_journal_keeps_an_exit_log_as_configured(tmp_path, journal_settings, logged):
    from tickguard.config import load
    from tickguard.runtime.engine_factory import open_journal

    path = tmp_path / "j.db"
    journal = open_journal(load(None, {"journal": {"path": str(path), **journal_settings}}), kind="simulated")
    journal.take_over()
    journal.insert_trade(trade_row())
    with journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        journal.commit_now(early=True)
        assert len(records(path)) == logged
        assert seen(path)[0] == ([] if logged else ["tg:T00001:stop"])
    journal.close()


def test_the_sqlite_log_is_started_over_although_the_engine_holds_a_transaction_between_its_commits(
        tmp_path, monkeypatch):
    """A transaction begun right after each commit (``Journal._ready``) keeps a snapshot from before the checkpoint,
    and SQLite starts its log over only for a writer whose snapshot began with the log wholly copied: held all the
    time, the log grew without end.  Past ``WAL_FRAMES_HELD`` the next transactions begin deferred until it has."""
    import tickguard.store.journal as journal_module

    monkeypatch.setattr(journal_module, "WAL_FRAMES_HELD", 40)
    path = tmp_path / "j.db"
    journal = engine_journal(path)
    checkpointer = journal._checkpointer
    checkpointer.stop()  # its passes made here, one at a time
    con = sqlite3.connect(path, isolation_level=None)
    journal.insert_trade(trade_row())
    frames = []
    for n in range(60):
        with journal.batch():
            journal.insert_order(order_row(f"tg:T00001:stop:{n}", status="pending"))
            journal.commit_now(early=True)
        checkpointer.checkpoint(con)
        frames.append(checkpointer.log_frames)
    assert max(frames) >= 40 and frames[-1] < 40, frames  # past the mark, then started over
    con.close()
    journal.close()
    assert seen(path)[0] == sorted(f"tg:T00001:stop:{n}" for n in range(60))


def test_exits_on_the_wire_that_cannot_be_committed_again_keep_their_log_and_nothing_commits_after_them(tmp_path):
    """From a review: the exits' own transaction after a rollback (``ExitRecords.reapply``) could not begin - the
    write lock held elsewhere past the busy timeout - and the records were forgotten: close() removed their log,
    with the order on the wire and no row anywhere.  Now they are kept, every later commit is refused (a commit
    would record their numbers without their writes), and the next start applies them."""
    import sqlalchemy as sa

    path = tmp_path / "j.db"
    journal, _ = with_a_trade(path)
    other = sqlite3.connect(path, isolation_level=None)  # an operator's sqlite3 shell, say
    armed = []

    def grab(conn):  # in the rollback, right after the driver's let the write lock go
        if armed and conn is journal._conn:
            armed.clear()
            other.execute("BEGIN IMMEDIATE")
            conn.connection.driver_connection.execute("PRAGMA busy_timeout=100")

    sa.event.listen(journal._engine, "rollback", grab)
    with pytest.raises(JournalError, match="exits on the wire could not be committed"), journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        journal.commit_now(early=True)  # on the wire from here
        journal.update_order("tg:T00001:stop", status="submitted")
        later = journal.position
        with pytest.raises(Exception, match="UNIQUE"):
            journal.insert_trade(trade_row())  # a later write refused: the transaction rolls back
        armed.append(True)
    other.execute("ROLLBACK")
    other.close()
    assert journal.receipt().void(later)  # the rolled-back writes are void all the same
    assert [seq for seq, _ in records(path)] == [1] and journal._exits.open  # kept: not committed
    with pytest.raises(JournalError, match="exits on the wire could not be committed"):
        journal.insert_trade(trade_row("T00002"))  # (its rollback applies the kept records: the lock is free now)
    journal.close()
    again = engine_journal(path)
    assert [o["order_key"] for o in again.orders_of(["T00001"])] == ["tg:T00001:stop"]
    assert [t["trade_id"] for t in again.list_trades()] == ["T00001"]
    again.close()


def test_a_value_bound_as_a_plain_type_is_logged_as_one(tmp_path):
    """From a review: marshal takes only exact str, int and float - an enum member, which SQLite binds as its
    value, raised a bare ValueError out of the exit's commit."""
    import enum

    class Status(enum.StrEnum):
        PENDING = "pending"

    path = tmp_path / "j.db"
    journal, _ = with_a_trade(path)
    with journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status=Status.PENDING))
        journal.commit_now(early=True)
        (_sql, values), = records(path)[0][1]
        assert "pending" in values and all(type(v) in (str, int, float, bytes, type(None)) for v in values)
    journal.close()


def test_a_deferred_write_sqlite_would_refuse_for_a_missing_value_is_refused_when_bound_before_any_exit(tmp_path):
    """A deferred write runs after the next exit's send: one SQLite would refuse then could not be undone (see
    above).  A NULL in a NOT NULL column - the refusal a bound row can carry - is refused when it is bound, as
    SQLite would: its transaction is void and nothing is sent."""
    path = tmp_path / "j.db"
    journal, _ = with_a_trade(path)
    with pytest.raises(JournalError, match="refused .*NOT NULL constraint failed: orders.status"), journal.batch():
        with pytest.raises(Exception, match="NOT NULL constraint failed: orders.status"):
            journal.insert_order(order_row("tg:T00001:stop", status=None))
        journal.insert_order(order_row("tg:T00001:target", status="pending"))
        journal.commit_now(early=True)
    assert records(path) == [] and seen(path) == ([], None)
    journal.close()


def _row_without(column: str, key: str) -> dict:
    row = order_row(key, status="pending")
    del row[column]
    return row


@pytest.mark.parametrize("bad", ["left out", "lone surrogate", "past 64 bits"])
def test_a_deferred_row_sqlite_would_refuse_is_refused_when_bound_and_nothing_is_released(tmp_path, bad):
    """From a second review: a NOT NULL column left out of the row (SQLite stores NULL, and refuses it when the
    row runs), text the driver cannot encode and an integer past 64 bits passed the bind and were refused only
    after the exit's send - and again at every start."""
    path = tmp_path / "j.db"
    journal, receipts = with_a_trade(path)
    if bad == "left out":
        row = _row_without("status", "tg:T00001:stop")
    else:
        row = order_row("tg:T00001:stop", status="pending")
        row["reason" if bad == "lone surrogate" else "created_ns"] = "bad \udc80" if bad == "lone surrogate" else 2**63
    with pytest.raises(JournalError, match="refused"), journal.batch():
        with pytest.raises(Exception, match="NOT NULL constraint failed: orders.status|cannot be stored|64 bits"):
            journal.insert_order(row)
        at = journal.position
        journal.commit_now(early=True)
    assert not any(r.covers(at) for r in receipts) and records(path) == []
    journal.close()
    engine_journal(path).close()  # and the next start is not stuck


def test_an_exit_after_its_transaction_ended_by_itself_reads_its_fence_under_the_lock_again(tmp_path):
    """From a second review: SQLite rolls a transaction back by itself on some errors (full, I/O, out of memory);
    the write lock and the fence read of ``_ready`` went with it, but were still believed held - the next exit's
    record was appended with another writer holding the lock, and no fence read."""
    path = tmp_path / "j.db"
    journal, _ = with_a_trade(path)
    journal._fast.driver().execute("ROLLBACK")  # stands for SQLite's own rollback
    journal._fast.driver().execute("PRAGMA busy_timeout=10")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another engine's token could be written now
    with pytest.raises(JournalError, match="locked"), journal.batch():
        journal.insert_order(order_row("tg:T00001:stop", status="pending"))
        journal.commit_now(early=True)
    assert records(path) == []
    other.execute("ROLLBACK")
    other.close()
    journal.close()
