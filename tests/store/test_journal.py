"""The journal on SQLite and PostgreSQL: writes, batches, reads, and refusals that never overwrite."""

import contextlib
import sqlite3
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tickguard.store.journal import _INSERT_EVENT, Journal, JournalError
from tickguard.store.journal_open import head_revision


def trade_row(tid="T00001", state="open", user="alice", symbol="AAA"):
    return dict(trade_id=tid, user_id=user, account="DU1", symbol=symbol, side="long", qty=Decimal(100),
                state=state, request={"symbol": symbol, "ref": f"r-{tid}"}, snapshot={"entry_filled": "0"},
                created_ns=1, updated_ns=1)


def order_row(key="tg:T00001:entry", tid="T00001", status="submitting"):
    return dict(order_key=key, trade_id=tid, leg="entry", user_id="alice", account="DU1", symbol="AAA",
                action="BUY", qty=Decimal(100), status=status, attempts=1, broker_order_id=None,
                filled=Decimal(0), avg_price=Decimal(0), commission=Decimal(0), reason="", intent={"key": key},
                created_ns=2, updated_ns=2)


def test_round_trip_and_filters(journal_target):
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    j.insert_trade(trade_row("T00002", state="closed", user="bob", symbol="BBB"))
    j.insert_order(order_row())
    j.insert_fill(dict(exec_id="e1", order_key="tg:T00001:entry", trade_id="T00001", qty=Decimal(100),
                       price=Decimal("10.01"), commission=Decimal("1.00"), ts_ns=3))
    j.event("accepted", 1, {"x": 1}, "T00001", None, "alice", "DU1")
    j.update_order("tg:T00001:entry", status="filled", filled=Decimal(100))
    leg = dict(name="stop", kind="stop", fraction=Decimal(1), level=Decimal("98.5"), armed=True, fired=0,
                filled=Decimal(0),
               inflight=Decimal(0), updated_ns=4)
    j.put_legs("T00001", [leg])
    j.put_legs("T00001", [{**leg, "fired": 1, "armed": False}])  # replaced, not appended
    j.close()
    j = Journal.open(journal_target, create=False)
    assert [t["trade_id"] for t in j.open_trades()] == ["T00001"]
    assert [t["trade_id"] for t in j.list_trades(user="bob")] == ["T00002"]
    assert [t["trade_id"] for t in j.list_trades(symbol="aaa", state="open")] == ["T00001"]
    [order] = j.orders_of(["T00001"])
    assert (order["status"], order["filled"]) == ("filled", Decimal(100))
    [fill] = j.fills_of(["T00001"])
    assert (fill["exec_id"], str(fill["price"]), str(fill["commission"])) == ("e1", "10.01", "1.00")
    [stored] = j.legs_of(["T00001"])
    assert (stored["name"], stored["fired"], stored["armed"], stored["level"]) == ("stop", 1, False, Decimal("98.5"))
    assert j.events_of(["T00001"])[0]["data"] == {"x": 1}
    assert j.known_refs() == {("alice", "r-T00001"), ("bob", "r-T00002")}
    assert j.max_trade_number() == 2
    j.close()


def test_batch_commits_once_and_rolls_back_on_error(journal_target):
    j = Journal.open(journal_target)
    before = j.commits
    with j.batch():
        j.insert_trade(trade_row())
        with j.batch():  # nested batches join the outer transaction
            j.insert_order(order_row())
    assert j.commits == before + 1
    with pytest.raises(RuntimeError), j.batch():
        j.insert_trade(trade_row("T00009"))
        raise RuntimeError("crash inside a step")
    assert [t["trade_id"] for t in j.list_trades()] == ["T00001"]  # nothing half-written
    j.close()


def test_every_write_after_a_commit_inside_a_batch_goes_with_the_batchs_rollback(journal_target):
    """SQLite's transactions are the journal's own, on the driver's connection (autocommit mode otherwise): a write
    of any kind - the hot writes, SQLAlchemy's (the volatility), after reads that SQLAlchemy began itself - must land
    in the open transaction, never commit on its own, whatever came before it in the batch."""
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    for first_read in (False, True):
        with pytest.raises(RuntimeError), j.batch():
            j.insert_order(order_row(f"tg:T00001:stop{first_read}"))
            j.commit_now()  # an exit released mid-step: the batch goes on in a new transaction
            if first_read:
                assert j.list_trades()  # SQLAlchemy begins its own idea of a transaction here
            j.save_volatility("AAA", 1.5, 2.5, 3)  # SQLAlchemy's write path
            j.insert_order(order_row(f"tg:T00001:late{first_read}"))  # a hot write after it
            assert j.load_volatility("AAA") is not None  # the batch sees its own writes
            raise RuntimeError("crash inside a step")
        with pytest.raises(RuntimeError), j.batch():  # hot writes only, right after a rollback
            j.insert_order(order_row(f"tg:T00001:hot{first_read}"))
            raise RuntimeError("crash inside a step")
        assert j.load_volatility("AAA") is None  # rolled back with the batch, not committed on its own
        keys = {o["order_key"] for o in j.orders_of(["T00001"])}
        assert f"tg:T00001:stop{first_read}" in keys
        assert not keys & {f"tg:T00001:late{first_read}", f"tg:T00001:hot{first_read}"}
    with j.batch():  # after the rollbacks, a read first, then writes: one transaction, committed
        assert j.load_volatility("AAA") is None
        j.save_volatility("AAA", 1.5, 2.5, 3)
        j.insert_order(order_row("tg:T00001:after"))
    assert j.load_volatility("AAA") is not None
    j.close()


def _committed_order_keys(journal_target) -> set[str]:
    """The order keys another connection sees committed."""
    engine = sa.create_engine(journal_target if "://" in journal_target else f"sqlite:///{journal_target}")
    try:
        with engine.connect() as conn:
            return {k for (k,) in conn.execute(sa.text("select order_key from orders"))}
    finally:
        engine.dispose()


def test_a_statement_refused_while_binding_inside_a_batch_takes_nothing_else_with_it(tmp_path):
    """Found by an independent review (SQLite: its transactions are the journal's own, on the driver): with
    SQLAlchemy out of a transaction while the journal's was open on the driver, a statement SQLAlchemy refused
    while binding its parameters made it roll the connection back on its own - the batch's earlier writes
    vanished, and the batch's commit still issued a receipt covering them.  (A write the journal makes that is
    refused now rolls its batch back anyway - the test below; the statement here goes straight to the connection,
    as any statement SQLAlchemy runs on it might.)"""
    from tickguard.store.schema import volatility

    journal_target = str(tmp_path / "journal.db")
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    with pytest.raises(RuntimeError), j.batch():  # a rollback: SQLAlchemy's transaction ends with it
        raise RuntimeError("crash inside a step")
    with j.batch():
        j.insert_order(order_row("tg:T00001:kept"))
        kept = j.position
        with pytest.raises(sa.exc.StatementError):  # refused while binding, and the caller goes on
            j._conn.execute(volatility.insert().values(symbol="X", atr="not a number", adr=1.0, ts_ns=1))
        j.insert_order(order_row("tg:T00001:later"))
    assert j.receipt().covers(kept)
    assert _committed_order_keys(journal_target) == {"tg:T00001:kept", "tg:T00001:later"}
    j.close()


def test_a_commit_the_database_refuses_is_a_journal_error_and_the_journal_goes_on(journal_target):
    """Found by an independent review: a COMMIT failing for another reason than an OperationalError (here a
    foreign key checked at the commit) escaped as the driver's own error on SQLite.  Now a JournalError on both
    backends; the transaction is voided and the next write works."""
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    if "://" in journal_target:
        with j._engine.connect() as conn:
            name = conn.execute(sa.text("select conname from pg_constraint where conrelid = 'orders'::regclass "
                                        "and contype = 'f'")).scalar()
            conn.execute(sa.text(f"alter table orders alter constraint {name} deferrable initially deferred"))
            conn.commit()
    else:
        j._conn.connection.driver_connection.execute("PRAGMA defer_foreign_keys=ON")
    with pytest.raises(JournalError, match="a commit failed"), j.batch():
        j.insert_order(order_row("tg:NOPE:entry", tid="NOPE"))  # no such trade: refused at the COMMIT
        orphan = j.position
    j.insert_order(order_row("tg:T00001:after"))
    assert j.receipt().void(orphan) and j.receipt().covers(j.position)
    assert _committed_order_keys(journal_target) == {"tg:T00001:after"}
    j.close()


def test_a_begin_sqlite_refuses_is_a_journal_error_on_either_write_path(tmp_path, monkeypatch):
    """Found by an independent review: a BEGIN refused (a locked database) before a write on SQLAlchemy's path
    escaped as the driver's error; the hot path's was a JournalError."""
    j = Journal.open(tmp_path / "journal.db")
    j.insert_trade(trade_row())
    real = j._conn.connection.driver_connection

    class RefusesBegin:
        in_transaction = False

        def execute(self, sql, *args):
            if sql == "BEGIN":
                raise sqlite3.OperationalError("database is locked")
            return real.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(type(j._conn.connection), "driver_connection", property(lambda self: RefusesBegin()))
    j._fast._dbapi = None  # the driver's connection is kept from its first use (sqlite_writes.SqliteWrites.driver)
    with pytest.raises(JournalError, match="database is locked"):
        j.insert_order(order_row("tg:T00001:hot"))  # the hot path
    with pytest.raises(JournalError, match="database is locked"):
        j.save_volatility("AAA", 1.0, 1.0, 1)  # SQLAlchemy's path
    monkeypatch.undo()
    j._fast._dbapi = None
    j.close()


def test_a_batch_whose_write_was_refused_and_swallowed_does_not_commit_or_issue_a_receipt(journal_target):
    """A write of a batch the database refuses (a duplicate key), its error caught and the batch carried on:
    PostgreSQL has aborted the transaction and its COMMIT quietly rolls back - before, the receipt still covered the
    batch's other writes, and the executor would have sent orders whose rows were never committed.  Now the batch's
    end rolls it back on both backends and says so; the journal goes on."""
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    j.insert_order(order_row("tg:T00001:dup"))
    with pytest.raises(JournalError, match="a write of this transaction was refused"), j.batch():
        j.insert_order(order_row("tg:T00001:a"))
        written = j.position
        with pytest.raises(sa.exc.IntegrityError):
            j.insert_order(order_row("tg:T00001:dup"))
    assert j.receipt().void(written) and not j.receipt().covers(written)
    assert _committed_order_keys(journal_target) == {"tg:T00001:dup"}
    with j.batch():  # the next batch commits as usual
        j.insert_order(order_row("tg:T00001:b"))
    assert j.receipt().covers(j.position)
    assert _committed_order_keys(journal_target) == {"tg:T00001:dup", "tg:T00001:b"}
    j.close()


def test_a_write_refused_inside_a_before_commit_hook_voids_its_batch_and_only_that_batch(journal_target):
    """Found by an independent review of the rule above: the refused write checked only before the before-commit
    hooks ran, so a hook's refused (and caught) write let the transaction commit - on PostgreSQL a quiet rollback
    under a receipt - and left the mark to roll back the next, healthy batch."""
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    j.insert_order(order_row("tg:T00001:dup"))
    fired: list[int] = []

    def hook(early: bool) -> None:
        if not fired:
            fired.append(1)
            with contextlib.suppress(sa.exc.IntegrityError):
                j.insert_order(order_row("tg:T00001:dup"))

    j.before_commit.append(hook)
    with pytest.raises(JournalError, match="a write of this transaction was refused"), j.batch():
        j.insert_order(order_row("tg:T00001:a"))
        written = j.position
    assert not j.receipt().covers(written)
    with j.batch():  # the next batch is not touched by the last one's refusal
        j.insert_order(order_row("tg:T00001:b"))
    assert j.receipt().covers(j.position)
    assert _committed_order_keys(journal_target) == {"tg:T00001:dup", "tg:T00001:b"}
    j.close()


def test_a_value_refused_on_the_driver_path_inside_a_batch_voids_the_batch(tmp_path):
    """SQLite's hot path raises a value JSON cannot hold as it is (nothing sent): caught by its caller, the batch's
    change is no longer whole - rolled back, as on SQLAlchemy's path."""
    j = Journal.open(tmp_path / "journal.db")
    j.insert_trade(trade_row())
    with pytest.raises(JournalError, match="TypeError"), j.batch():
        j.insert_order(order_row("tg:T00001:a"))
        with pytest.raises(TypeError):
            j._write(_INSERT_EVENT, {"kind": "odd", "ts_ns": 1, "data": {"x": object()}, "trade_id": "T00001",
                                     "order_key": None, "user_id": None, "account": None})
    assert _committed_order_keys(str(tmp_path / "journal.db")) == set()
    j.close()


def test_missing_journal_is_an_error_when_not_creating(tmp_path):
    with pytest.raises(JournalError, match="does not exist"):
        Journal.open(tmp_path / "nope.db", create=False)
    with pytest.raises(JournalError, match="directory .* does not exist"):
        Journal.open(tmp_path / "no" / "such" / "dir.db")
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a database at all" * 100])
def test_corrupt_or_foreign_file_is_refused_untouched(tmp_path, content):
    path = tmp_path / "journal.db"
    path.write_bytes(content)
    with pytest.raises(JournalError, match="refusing to open or overwrite"):
        Journal.open(path)
    assert path.read_bytes() == content


def test_damaged_sqlite_journal_fails_integrity_check(tmp_path):
    path = tmp_path / "journal.db"
    j = Journal.open(path)
    for i in range(400):
        j.insert_trade(trade_row(f"T{i:05d}"))
    j.close()
    data = bytearray(path.read_bytes())
    data[5000:9000] = b"\xff" * 4000  # scribble over pages, keep the header
    path.write_bytes(bytes(data))
    snapshot = path.read_bytes()
    with pytest.raises(JournalError, match="integrity check|unreadable|corrupt"):
        Journal.open(path)
    assert path.read_bytes() == snapshot


def test_journal_from_a_newer_schema_is_refused(journal_target):
    Journal.open(journal_target).close()
    engine = sa.create_engine(journal_target if "://" in journal_target else f"sqlite:///{journal_target}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(JournalError, match=r"schema revision '9999', newer than this tickguard knows .*not touched"):
        Journal.open(journal_target)
    engine = sa.create_engine(journal_target if "://" in journal_target else f"sqlite:///{journal_target}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "9999"
    engine.dispose()


def test_foreign_database_with_tables_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(JournalError, match="not a tickguard journal"):
        Journal.open(path)


def test_postgresql_down_is_a_clear_error():
    with pytest.raises(JournalError, match=r"cannot reach the journal database postgresql\+psycopg://u:\*\*\*@127"):
        Journal.open("postgresql+psycopg://u:secret@127.0.0.1:1/nodb")


def test_schema_is_at_head(journal_target):
    Journal.open(journal_target).close()
    engine = sa.create_engine(journal_target if "://" in journal_target else f"sqlite:///{journal_target}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_the_chosen_durability(tmp_path):
    j = Journal.open(tmp_path / "j.db", synchronous="FULL")
    assert j._conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert j._conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    j.close()
    with pytest.raises(JournalError, match="sqlite_synchronous"):
        Journal.open(tmp_path / "k.db", synchronous="OFF")


def test_migrations_build_exactly_the_declared_schema(journal_target):
    """schema.py (what the code uses) and the migrations (what databases get) must never drift apart."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from tickguard.store.schema import metadata

    Journal.open(journal_target).close()
    engine = sa.create_engine(journal_target if "://" in journal_target else f"sqlite:///{journal_target}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_a_fill_journaled_again_is_not_written_twice_and_is_no_error(journal_target, caplog):
    """Exec ids are unique: a replay (a reconnect, a restart, a second run on the journal) is a logged no-op, also
    inside a batch, whose other writes still commit (PostgreSQL's transaction is not aborted)."""
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    j.insert_order(order_row())
    j.insert_order(order_row(key="tg:T00001:stop:1"))
    fill = dict(exec_id="e1", order_key="tg:T00001:entry", trade_id="T00001", qty=Decimal(100),
                price=Decimal("10.01"), commission=None, ts_ns=3)
    assert j.insert_fill(fill) is True
    with caplog.at_level("INFO", logger="tickguard.store.journal"), j.batch():
        assert j.insert_fill(fill) is False
        assert j.insert_fill({**fill, "order_key": "tg:T00001:stop:1"}) is False  # the id, not the order, counts
        j.event("after", 4, {}, "T00001")
    [replay, clash] = [r for r in caplog.records if r.name == "tickguard.store.journal"]
    assert replay.levelname == "INFO" and "e1 of tg:T00001:entry is already journaled" in replay.getMessage()
    assert clash.levelname == "WARNING" and "already journaled for tg:T00001:entry" in clash.getMessage()
    j.set_fill_commission("e1", Decimal("1.25"))
    j.set_fill_commission("e1", Decimal("9.99"))  # only a missing commission is filled in
    [stored] = j.fills_of(["T00001"])
    assert stored["commission"] == Decimal("1.25") and [e["kind"] for e in j.events_of(["T00001"])] == ["after"]
    j.close()


def test_every_journal_has_an_id_of_its_own_for_good(journal_target, tmp_path):
    j = Journal.open(journal_target)
    jid = j.journal_id
    j.close()
    assert len(jid) == 8 and int(jid, 16) >= 0
    again = Journal.open(journal_target, create=False)
    other = Journal.open(tmp_path / "other.db")
    assert again.journal_id == jid and other.journal_id != jid
    again.close()
    other.close()


def test_commit_hooks_run_after_the_commit_with_receipts_of_what_is_durable(journal_target):
    j = Journal.open(journal_target)
    probe = sa.create_engine(journal_target if "://" in journal_target else f"sqlite:///{journal_target}")

    def committed() -> list[str]:
        with probe.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT trade_id FROM trades ORDER BY trade_id"))]

    seen = []
    j.after_commit.append(lambda receipt: seen.append((receipt.upto, committed())))
    with j.batch():
        j.insert_trade(trade_row("T00001"))
        first = j.position
        assert seen == [] and not j.receipt().covers(first)
    assert seen == [(first, ["T00001"])] and j.receipt().covers(first)  # the hook saw the row durable
    with pytest.raises(RuntimeError), j.batch():
        j.insert_trade(trade_row("T00002"))
        lost = j.position
        raise RuntimeError("step failed")
    j.insert_trade(trade_row("T00003"))  # committed on its own
    receipt = j.receipt()
    assert receipt.upto > lost and not receipt.covers(lost) and receipt.void(lost) and receipt.covers(j.position)
    assert seen[-1] == (j.position, ["T00001", "T00003"]) and len(seen) == 2  # no hook for the rollback
    probe.dispose()
    j.close()


def test_before_commit_writes_join_the_transaction_and_a_failing_one_voids_it_whole(journal_target):
    """The before-commit hooks (the recorder's trade snapshots) write inside the transaction about to commit - a
    lone write outside a batch too - and never commit on their own; one that fails rolls the whole transaction
    back, so nothing it records is covered by a receipt (nothing of it is ever sent)."""
    j = Journal.open(journal_target)
    calls: list[int] = []
    fail = False

    def snapshot(early: bool) -> None:
        calls.append(j.position)
        if fail:
            raise RuntimeError("disk full")
        j.update_trade("T00001", state="exiting")

    j.insert_trade(trade_row())
    j.before_commit.append(snapshot)
    commits = j.commits
    with j.batch():
        j.insert_order(order_row())
        assert calls == []  # nothing before the commit
    assert j.commits == commits + 1 and len(calls) == 1  # one commit: the hook's write went with the order's
    assert j.list_trades()[0]["state"] == "exiting" and j.receipt().covers(j.position)
    j.event("noted", 5, {}, "T00001")  # outside a batch: the event and the hook's write, one commit
    assert j.commits == commits + 2 and len(calls) == 2
    fail = True
    with pytest.raises(RuntimeError, match="disk full"), j.batch():
        j.insert_order(order_row("tg:T00001:stop:1"))
        lost = j.position
    assert not j.receipt().covers(lost) and j.receipt().void(lost) and j.rollbacks == 1
    assert [o["order_key"] for o in j.orders_of(["T00001"])] == ["tg:T00001:entry"]
    j.before_commit.clear()
    j.close()


def test_sqlite_never_checkpoints_inside_a_commit_its_thread_does(tmp_path):
    """A commit that found the log past SQLite's 1,000 pages used to copy it into the file itself (15-22 ms of a
    held event loop); the journal's connection has the automatic checkpoint off, and its own thread copies the
    log in the background - the file holds the rows, the log starts over."""
    path = tmp_path / "j.db"
    j = Journal.open(path)
    assert j._conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    checkpointer = j._checkpointer
    assert checkpointer is not None
    checkpointer.stop()  # driven by hand below: no timing in the test
    for i in range(3000):  # well past 1,000 pages of log
        j.event("x", i, {"pad": "y" * 500}, "T00001")
    wal = path.with_name("j.db-wal")
    assert wal.stat().st_size > 3000 * 4096  # a page a commit at least: none of them copied the log back
    with sqlite3.connect(path, isolation_level=None) as con:
        checkpointer.checkpoint(con)
    assert checkpointer.checkpoints == 1
    j.event("x", 9, {}, "T00001")  # the writer starts the log over: everything was copied
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 3001
    start = time.monotonic()
    j.close()
    assert time.monotonic() - start < 5


def test_the_checkpoint_thread_runs_until_the_journal_closes(tmp_path):
    j = Journal.open(tmp_path / "j.db")
    for i in range(50):
        j.event("x", i, {}, "T00001")
    deadline = time.monotonic() + 10
    while j._checkpointer.checkpoints == 0:  # every 0.5 s: poll with a deadline
        assert time.monotonic() < deadline, "the log was never checkpointed"
        time.sleep(0.05)
    thread = j._checkpointer._thread
    j.close()
    assert not thread.is_alive()


def test_a_batchs_events_are_written_together_at_its_commit_in_order_and_go_with_a_rollback(journal_target):
    j = Journal.open(journal_target)
    j.insert_trade(trade_row())
    writes = j.position
    with j.batch():
        for i in range(4):
            j.event(f"e{i}", i, {"i": i}, "T00001")
        assert j.position == writes and j.events_of(["T00001"]) == []  # waiting for the commit
    assert j.position == writes + 1  # one statement
    assert [e["kind"] for e in j.events_of(["T00001"])] == ["e0", "e1", "e2", "e3"]
    with pytest.raises(RuntimeError), j.batch():
        j.event("lost", 9, {}, "T00001")
        raise RuntimeError("step failed")
    j.event("after", 10, {}, "T00001")  # outside a batch: at once
    assert [e["kind"] for e in j.events_of(["T00001"])][-2:] == ["e3", "after"]
    j.close()


def test_the_head_revision_known_without_alembic_is_alembics_head():
    """``HEAD_REVISION`` lets a journal at head open without importing alembic; a new migration must move it."""
    from alembic.script import ScriptDirectory

    from tickguard.store.journal_open import HEAD_REVISION, _alembic_config

    assert ScriptDirectory.from_config(_alembic_config()).get_current_head() == HEAD_REVISION


def test_opening_a_journal_at_head_imports_no_alembic(tmp_path):
    import subprocess
    import sys

    Journal.open(tmp_path / "j.db").close()  # created and migrated here
    code = ("import sys; from tickguard.store.journal import Journal; Journal.open(sys.argv[1]).close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "j.db")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_orders_of_trades_over_are_read_within_a_window_of_the_newest_order_with_their_exec_ids(journal_target):
    """Recovery's read of the recent orders of trades that are over (the broker's book still lists the day's): an
    order of an open trade is not one, an order older than the window before the newest order is not read, and
    each order read comes with its status and journaled exec ids; ``orders_held`` looks up given keys."""
    j = Journal.open(journal_target)
    j.insert_trade(trade_row("T00001", state="closed"))
    j.insert_trade(trade_row("T00002", state="open"))
    j.insert_trade(trade_row("T00003", state="cancelled"))
    for key, tid, status, made in (("tg:T00001:entry", "T00001", "filled", 100), ("tg:T00001:stop:1", "T00001",
                                   "filled", 200), ("tg:T00002:entry", "T00002", "filled", 300),
                                   ("tg:T00003:entry", "T00003", "cancelled", 10)):
        j.insert_order({**order_row(key, tid, status), "created_ns": made})
    for exec_id, key, tid in (("e1", "tg:T00001:entry", "T00001"), ("e2", "tg:T00001:stop:1", "T00001"),
                              ("e3", "tg:T00001:stop:1", "T00001"), ("e4", "tg:T00002:entry", "T00002")):
        j.insert_fill(dict(exec_id=exec_id, order_key=key, trade_id=tid, qty=Decimal(50), price=Decimal(10),
                           commission=None, ts_ns=5))
    assert j.orders_over(250) == {"tg:T00001:entry": ("filled", {"e1"}), "tg:T00001:stop:1": ("filled", {"e2", "e3"})}
    assert set(j.orders_over(10**6)) == {"tg:T00001:entry", "tg:T00001:stop:1", "tg:T00003:entry"}
    assert j.orders_over(0) == {}  # only the newest order is in a window of 0, and its trade is open
    assert j.orders_held(["tg:T00002:entry", "tg:nobody"]) == {"tg:T00002:entry": ("filled", {"e4"})}
    j.close()
