"""The SQLite fast path of the journal's hot writes (store/sqlite_writes.py) writes exactly what SQLAlchemy's own
execution writes: the same rows, byte for byte, column defaults, exact decimals and JSON included; a value a
column refuses is refused the same way, with nothing written; and the writes stay inside the batch's transaction."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tickguard.store.exact import NotExactError
from tickguard.store.journal import Journal, JournalError


def hot_writes(j: Journal) -> None:
    with j.batch():
        j.insert_trade({"trade_id": "T1", "user_id": "u", "account": "DU1", "symbol": "AAA", "side": "long",
                        "qty": Decimal("100"), "state": "pending_entry", "request": {"qty": "100", "x": [1, 2.5]},
                        "snapshot": {"legs": {"stop": {"armed": True}}, "level": Decimal("9.95")},
                        "created_ns": 1, "updated_ns": 1})
        j.insert_order({"order_key": "tg:x:T1:entry", "trade_id": "T1", "leg": "entry", "user_id": "u",
                        "account": "DU1", "symbol": "AAA", "action": "BUY", "qty": Decimal("100"),
                        "status": "submitting", "intent": {"key": "tg:x:T1:entry"}, "created_ns": 2,
                        "updated_ns": 2})  # attempts, filled, avg_price, commission, reason: the columns' defaults
        j.event("accepted", 3, {"qty": "100", "nan_free": None}, "T1", None, "u", "DU1")
    with j.batch():
        j.update_order("tg:x:T1:entry", status="filled", filled=Decimal("100"), avg_price=Decimal("10.015"),
                       updated_ns=4)
        j.update_trade("T1", state="open", snapshot={"s": 2}, updated_ns=4)
        j.put_legs("T1", [{"name": n, "kind": n, "fraction": Decimal("0.5"), "level": Decimal("9.90"),
                           "armed": True, "fired": 0, "filled": Decimal(0), "inflight": Decimal(0), "updated_ns": 4}
                          for n in ("stop", "tp1")])
    j.event("outside_a_batch", 5, {}, "T1")  # its own transaction


def rows(path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("trades", "orders", "legs", "events")}


def test_the_fast_path_writes_what_sqlalchemy_writes(tmp_path):
    fast, slow = Journal.open(tmp_path / "fast.db"), Journal.open(tmp_path / "slow.db")
    assert fast._fast is not None
    slow._fast = None  # SQLAlchemy's own execution
    for j in (fast, slow):
        hot_writes(j)
        j.close()
    a, b = rows(tmp_path / "fast.db"), rows(tmp_path / "slow.db")
    assert a == b and all(a.values())


def test_a_refused_value_writes_nothing_and_a_batch_rolls_back_whole(tmp_path):
    j = Journal.open(tmp_path / "j.db")
    with pytest.raises(NotExactError):
        j.update_trade("T9", qty=1.5)  # a float is refused by its column, before anything is sent
    with pytest.raises(RuntimeError), j.batch():
        j.event("first", 1, {}, None)
        raise RuntimeError("the step failed")
    j.event("second", 2, {}, None)
    j.close()
    with sqlite3.connect(tmp_path / "j.db") as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM events")]
    assert kinds == ["second"]


def test_a_driver_error_is_raised_as_sqlalchemys(tmp_path):
    j = Journal.open(tmp_path / "j.db")
    row = {"order_key": "k", "trade_id": "T1", "leg": "entry", "user_id": "u", "account": "A", "symbol": "S",
           "action": "BUY", "qty": Decimal(1), "status": "new", "intent": {}, "created_ns": 0, "updated_ns": 0}
    with pytest.raises(sa.exc.IntegrityError):
        j.insert_order(row)  # no trade T1: the foreign key refuses it
    j.close()


def test_the_next_transaction_is_begun_after_a_commit_and_holds_no_lock_no_snapshot_and_no_empty_commit(tmp_path):
    """After a commit and its hooks the next transaction is begun (``SqliteWrites.ready``: the next exit's row does
    not pay for its BEGIN).  Deferred, it blocks nothing: another connection writes, reads what is committed, and
    checkpoints the whole log; a batch that writes nothing commits nothing (no commit counted, no hook run), and
    gives up the snapshot a read of it took (else the journal's next write, after another connection's, would be
    refused: SQLite does not let a transaction write on a snapshot older than the database)."""
    path = tmp_path / "j.db"
    j = Journal.open(path)
    hot_writes(j)
    assert j._fast is not None and j._fast.in_transaction()  # begun, waiting for the next write
    with sqlite3.connect(path, timeout=0) as other:  # timeout 0: a lock held by the journal would raise at once
        other.execute("CREATE TABLE scratch (x)")
        other.execute("INSERT INTO scratch VALUES (1)")
        other.commit()
        busy, log, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and copied == log  # no snapshot of the journal's holds the log back
        assert other.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    commits, notified = j.commits, []
    j.after_commit.append(notified.append)
    with j.batch():
        j.orders_of(["T1"])  # a read, no write: its snapshot is given up at the batch's end
    assert (j.commits, notified) == (commits, [])
    with sqlite3.connect(path) as other:  # a write after that read (kept, the journal's next write would be refused)
        other.execute("INSERT INTO scratch VALUES (2)")
    with j.batch():
        j.update_order("tg:x:T1:entry", reason="x", updated_ns=6)
    assert j.commits == commits + 1 and len(notified) == 1
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT reason FROM orders").fetchone() == ("x",)
    j.close()


def _another_connection_writes(path) -> None:
    with sqlite3.connect(path, timeout=0) as other:
        other.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
        other.execute("INSERT INTO scratch VALUES (1)")


@pytest.mark.parametrize("where", ["outside_a_batch", "outside_then_a_batch", "at_a_batchs_start"])
def test_a_read_keeps_no_snapshot_another_connections_write_would_outdate(tmp_path, where):
    """Found by an independent review: with the next transaction begun ahead of its writes, a read outside a batch
    (``Engine._prepare``'s volatility fallback, recovery's reads) or before a batch's first write took a snapshot
    there and kept it; after another connection's write the journal's next write was refused ("database is
    locked": SQLite does not let a transaction write on an outdated snapshot) and the WAL checkpoint held back.
    A read with no write of its transaction before it gives its snapshot up at once (``Journal._read``)."""
    path = tmp_path / "j.db"
    j = Journal.open(path)
    hot_writes(j)
    if where == "at_a_batchs_start":
        with j.batch():
            j.orders_of(["T1"])
            _another_connection_writes(path)
            j.update_order("tg:x:T1:entry", reason="x", updated_ns=6)
    else:
        j.load_volatility("AAA")
        j.open_trades()
        _another_connection_writes(path)
        with sqlite3.connect(path, timeout=0) as other:
            busy, log, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            assert busy == 0 and copied == log  # nothing of the journal's holds the log back
        if where == "outside_a_batch":
            j.event("after", 9, {}, "T1")
        else:
            with j.batch():
                j.update_order("tg:x:T1:entry", reason="x", updated_ns=6)
    j.close()


def test_a_read_after_a_write_that_failed_part_way_rolls_its_rows_back(tmp_path):
    """A multi-row write refused at its second row, as the first write of a batch whose caller goes on: the journal
    counted nothing, so the next read ends the transaction as one that only read - by a rollback, never a COMMIT
    that would keep the first row (found by an independent review)."""
    path = tmp_path / "j.db"
    j = Journal.open(path)
    hot_writes(j)
    leg = {"kind": "stop", "fraction": Decimal("1"), "level": None, "armed": True, "fired": 0, "filled": Decimal(0),
           "inflight": Decimal(0), "updated_ns": 9}
    from tickguard.store.schema import legs

    with pytest.raises(JournalError), j.batch():
        with pytest.raises(sa.exc.IntegrityError):  # the second row's key is the first's
            j._write(legs.insert(), [{"trade_id": "T1", "name": "extra", **leg}, {"trade_id": "T1", "name": "extra",
                                                                                   **leg}])
        j.legs_of(["T1"])  # a read: the transaction ends here
    assert [r for r in rows(path)["legs"] if r[1] == "extra"] == []
    j.close()
