"""Write-ahead by construction: an order or a cancel reaches the broker only after the journal committed the
row that records it.  The executor sends only what a commit receipt covers, and only the journal, after a
commit has returned, hands one out (its after-commit hook) - so no caller can send ahead of the journal.

The checks read the journal through a connection of their own, which sees only what is committed."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tickguard.adapters.broker import OrderStatusEvent
from tickguard.adapters.sim.broker import SimBroker
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass, Side
from tickguard.core.trades import TradeRequest
from tickguard.interfaces.demo import demo_trades
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import sim_engine
from tickguard.runtime.journal_recorder import JournalRecorder
from tickguard.runtime.order_executor import OrderExecutor
from tickguard.runtime.outbox import WriteAheadError
from tickguard.store.journal import CommitReceipt, Journal, JournalError

NS = 1_000_000_000
TRADE = "T00001"


class CommittedRows:
    """The journal as another connection sees it: committed rows only."""

    def __init__(self, target: str) -> None:
        self.engine = sa.create_engine(target if "://" in target else f"sqlite:///{target}")

    def status(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT status FROM orders WHERE order_key = :k"), {"k": key}).scalar()

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def rows(journal_target):
    r = CommittedRows(journal_target)
    yield r
    r.close()


class Sink:
    """An order sink that notes, at the moment each order or cancel reaches it, the order's committed status."""

    def __init__(self, rows: CommittedRows) -> None:
        self.rows = rows
        self.placed: list[tuple[str, str | None]] = []
        self.cancelled: list[tuple[int, str | None]] = []
        self.keys: dict[int, str] = {}

    def place_order(self, order) -> int:
        self.placed.append((order.ref, self.rows.status(order.ref)))
        self.keys[len(self.placed)] = order.ref
        return len(self.placed)

    def cancel_order(self, order_id: int) -> None:
        self.cancelled.append((order_id, self.rows.status(self.keys[order_id])))


class Listener:
    def on_fill(self, *args) -> None: ...

    def on_intent_closed(self, *args) -> None: ...

    def on_commission(self, *args) -> None: ...


def key(n: int = 1) -> str:
    return f"tg:0a1b2c3d:{TRADE}:stop:{n}"


def intent(n: int = 1) -> OrderIntent:
    return OrderIntent(key(n), TRADE, "stop", "alice", "DU1", "AAA", Action.SELL, Decimal(100), OrderType.MARKET,
                       None, PriorityClass.EXIT_CRITICAL, 0)


@pytest.fixture
def parts(journal_target, rows, clock):
    """A real journal (SQLite or PostgreSQL) with one trade, an executor journaling through the recorder."""
    journal = Journal.open(journal_target)
    journal.insert_trade(dict(trade_id=TRADE, user_id="alice", account="DU1", symbol="AAA", side="long",
                              qty=Decimal(100), state="open", request={}, snapshot={}, created_ns=1, updated_ns=1))
    sink = Sink(rows)
    ex = OrderExecutor(sink, Listener(), clock, journal=journal)
    ex.on_event = JournalRecorder(journal, None).on_order_event  # type: ignore[arg-type]
    yield journal, sink, ex
    journal.close()


def test_an_order_goes_out_only_when_the_transaction_that_journals_it_commits(parts, rows):
    journal, sink, ex = parts
    with journal.batch():
        ex.submit(intent())
        with journal.batch():  # a nested batch ending commits nothing: still not sent
            ex.submit(intent(2))
        assert sink.placed == [] and rows.status(key()) is None
        ex.transmit(journal.receipt())  # a receipt of an earlier commit cannot cover what this one holds
        assert sink.placed == []
        with pytest.raises(WriteAheadError, match="commit receipt"):
            ex.transmit()  # and without a receipt nothing may go at all
    assert sink.placed == [(key(), "submitting"), (key(2), "submitting")]  # sent by the commit, rows committed
    assert ex.orders[key()].order_id == 1 and rows.status(key()) == "submitting"  # "sent" noted after


def test_an_order_whose_transaction_rolls_back_is_never_sent_and_later_orders_go_after_their_commit(parts, rows,
                                                                                                    caplog):
    journal, sink, ex = parts
    with pytest.raises(RuntimeError, match="the step failed"), journal.batch():
        ex.submit(intent())
        raise RuntimeError("the step failed")
    assert sink.placed == [] and rows.status(key()) is None
    journal.event("heartbeat", 1, {}, TRADE)  # a later commit, past the lost order's journal position
    assert sink.placed == []
    assert ex.unjournaled == 1 and "rolled back" in caplog.text and key() in caplog.text
    with journal.batch():  # the journal works: a later commit sends what it records
        ex.submit(intent(2))
    assert sink.placed == [(key(2), "submitting")]


def test_an_order_whose_commit_fails_is_never_sent(parts, rows, monkeypatch):
    journal, sink, ex = parts

    def disk_full() -> None:  # as each backend's commit raises it: SQLite's COMMIT is the driver's own
        if journal.where.startswith("postgresql"):
            raise sa.exc.OperationalError("COMMIT", {}, Exception("database or disk is full"))
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(journal, "_end_transaction", disk_full)
    with pytest.raises(JournalError, match="a commit failed: database or disk is full"), journal.batch():
        ex.submit(intent())
    monkeypatch.undo()
    assert sink.placed == [] and rows.status(key()) is None
    journal.event("heartbeat", 1, {}, TRADE)  # a later successful commit
    with journal.batch():
        ex.submit(intent(2))
    assert sink.placed == [(key(2), "submitting")]  # sent after its commit; the lost one never


def test_outside_a_batch_an_order_goes_right_after_its_own_commit(parts):
    _, sink, ex = parts
    ex.submit(intent())
    assert sink.placed == [(key(), "submitting")]


def test_a_cancel_goes_out_only_after_the_commit_that_journals_it(parts, rows):
    journal, sink, ex = parts
    with journal.batch():
        ex.submit(intent())
    ex.on_status(OrderStatusEvent(1, key(), "submitted", 0, 100, 0))
    with pytest.raises(RuntimeError), journal.batch():
        ex.cancel(key())
        raise RuntimeError("the step failed")
    assert sink.cancelled == [] and rows.status(key()) == "submitted"  # rolled back: never sent
    journal.event("heartbeat", 1, {}, TRADE)
    assert sink.cancelled == [] and ex.unjournaled == 1
    with journal.batch():  # asked again, journaled again: it goes when that commits
        ex.cancel(key())
        assert sink.cancelled == []
    assert sink.cancelled == [(1, "cancelling")]


def test_receipts_come_only_from_the_journal_and_only_its_own_count(parts, tmp_path):
    journal, sink, ex = parts
    with pytest.raises(TypeError, match="issued by the Journal"):
        CommitReceipt(object(), journal, 10**9, ())
    other = Journal.open(tmp_path / "other.db")
    try:
        with journal.batch():
            ex.submit(intent())
            with pytest.raises(WriteAheadError):
                ex.transmit(other.receipt())
        assert len(sink.placed) == 1
    finally:
        other.close()


def test_an_order_nobody_journals_is_refused(journal_target, rows, clock):
    journal = Journal.open(journal_target)
    try:
        ex = OrderExecutor(Sink(rows), Listener(), clock, journal=journal)  # no recorder listening
        with pytest.raises(WriteAheadError, match="not journaled"):
            ex.submit(intent())
    finally:
        journal.close()


# --------------------------------------------------------------------------------------- the engine


class CheckingBroker(SimBroker):
    """The simulated broker, noting each order's committed journal status as it arrives."""

    def __init__(self, venue, rows: CommittedRows) -> None:
        super().__init__(venue)
        self.rows = rows
        self.placed: list[tuple[str, str | None]] = []
        self.cancelled: list[tuple[str, str | None]] = []

    def place_order(self, order) -> int:
        self.placed.append((order.ref, self.rows.status(order.ref)))
        return super().place_order(order)

    def cancel_order(self, order_id: int) -> None:
        ref = self.venue.exchange.orders[order_id].order.ref
        self.cancelled.append((ref, self.rows.status(ref)))
        super().cancel_order(order_id)


async def test_engine_sends_every_order_and_cancel_only_after_its_journal_row_is_committed(journal_target, rows):
    """The engine's own loop (submit, steps, timers, cancels): whatever it does in whatever order, each order and
    cancel finds its row committed - ``submitting`` / ``cancelling`` - when it reaches the broker."""
    where = {"url": journal_target} if "://" in journal_target else {"path": journal_target}
    s = load(None, {"sim": {"speed": 0, "symbols": 3, "seed": 5}, "journal": where})
    _, venue = sim_engine(s)  # the venue only
    broker = CheckingBroker(venue, rows)
    journal = Journal.open(journal_target)
    engine = Engine(s, broker, journal=journal)
    try:
        symbols = sorted(venue.specs)
        await engine.start(symbols)
        await engine.run_until(broker.now_ns() + 2 * NS)
        for request in demo_trades(6, symbols, 5):
            engine.submit(request)
        far = round(venue.last_ticks[symbols[0]].bid * 0.8, 2)  # never fills: its entry timeout cancels it
        engine.submit(TradeRequest(symbol=symbols[0], side=Side.LONG, qty=100, entry_type="LMT", limit_price=far,
                                   entry_timeout_s=30, account="DU1000", rules=[StopLoss(distance=1.0)]))
        await engine.run_until(broker.now_ns() + 2400 * NS)
    finally:
        journal.close()
    assert len(broker.placed) >= 10 and any(":stop:" in k or ":tp" in k for k, _ in broker.placed)
    assert [p for p in broker.placed if p[1] != "submitting"] == []
    assert broker.cancelled and [c for c in broker.cancelled if c[1] != "cancelling"] == []
