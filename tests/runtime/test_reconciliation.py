"""Reconciliation while running (runtime/reconciliation.py) on the simulated market, in virtual time.

An order whose acknowledgement never comes is questioned after ``engine.ack_timeout_s`` and resolved from the
broker's order book; a position changed behind the engine's back is reported UNRECONCILED at the next passes,
once; an order book that cannot be fetched makes new entries wait (exits still go out) until a complete pass.
"""

from __future__ import annotations

import logging
from collections import Counter
from decimal import Decimal
from types import SimpleNamespace

from tickguard.adapters.broker import (
    BrokerError,
    BrokerOrder,
    FillEvent,
    KnownToEngine,
    OrderBook,
    OrderStatusEvent,
)
from tickguard.adapters.sim.broker import SimBroker
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss, TimeStop
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass, Side
from tickguard.core.open_positions import OpenPositions
from tickguard.core.order_state import OrderStatus
from tickguard.core.trades import TradeRequest
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import sim_engine as make_sim
from tickguard.runtime.order_executor import OrderExecutor
from tickguard.runtime.order_record import OrderRecord
from tickguard.runtime.reconciliation import Reconciler
from tickguard.runtime.recovery import RecoveryReport, reconcile
from tickguard.store.journal import Journal

NS = 1_000_000_000
ACCOUNT = "DU1000"


class WaryBroker(SimBroker):
    """The simulated broker with faults: acknowledgements dropped, placements lost, the order book failing."""

    drop_acks = False  # acknowledgements of entries never reach the engine
    lose_next = 0  # placements that never reach the venue (the adapter believed it sent them)
    book_fails = False
    book_partial = False
    drop_fills = False  # executions never reach the engine as events (the order book still has them)
    books = 0
    last_book: OrderBook | None = None

    def place_order(self, order: BrokerOrder) -> int:
        if self.lose_next:
            self.lose_next -= 1
            return 10_000_000 + self.lose_next  # an id the venue never gave
        return super().place_order(order)

    async def order_book(self, full: bool = True, known: KnownToEngine | None = None) -> OrderBook:
        self.books += 1
        if self.book_fails:
            raise BrokerError("completed orders: request timed out")
        book = await super().order_book(full, known)
        book.complete = not self.book_partial
        self.last_book = book
        return book

    async def next_events(self, wake_at_ns: int | None) -> list:
        events = await super().next_events(wake_at_ns)
        if self.drop_acks:
            events = [e for e in events if not (isinstance(e, OrderStatusEvent) and e.status is OrderStatus.SUBMITTED
                                                 and e.ref.endswith(":entry"))]
        if self.drop_fills:
            events = [e for e in events if not isinstance(e, FillEvent)]
        return events


async def engine_on(tmp_path) -> tuple[Engine, WaryBroker]:
    s = load(None, {"sim": {"speed": 0, "symbols": 3, "seed": 5, "start": "2026-11-23T10:00:00-05:00"},
                    "volatility": {"intraday": False}, "journal": {"path": str(tmp_path / "j.db")}})
    journal = Journal.open(s.journal.target)
    _, venue = make_sim(s, journal=None)
    broker = WaryBroker(venue)
    engine = Engine(s, broker, journal=journal)
    await engine.start(sorted(venue.specs))
    await engine.run_until(broker.now_ns() + 2 * NS)  # first quotes
    return engine, broker


def far_limit(engine: Engine, symbol: str) -> TradeRequest:
    """A long entry far below the market: it stays working at the venue."""
    far = round(engine.broker.venue.last_ticks[symbol].bid * 0.8, 2)  # type: ignore[attr-defined]
    return TradeRequest(symbol=symbol, side=Side.LONG, qty=100, entry_type="LMT", limit_price=far, account=ACCOUNT,
                        rules=[StopLoss(distance=1.0)])


def at_venue(engine: Engine) -> Counter:
    venue = engine.broker.venue  # type: ignore[attr-defined]
    return Counter(o.order.ref for o in venue.exchange.orders.values())


async def test_an_order_never_acknowledged_is_questioned_after_the_deadline_and_adopted(tmp_path, caplog):
    engine, broker = await engine_on(tmp_path)
    caplog.set_level(logging.WARNING, logger="tickguard.runtime.reconciliation")
    broker.drop_acks = True
    sent_at = broker.now_ns()
    trade = engine.submit(far_limit(engine, "SIM001"))
    record = engine.executor.orders[trade.entry_key]

    await engine.run_until(sent_at + 4 * NS)
    assert record.status is OrderStatus.SUBMITTING and engine.reconciliation.questioned == []  # before 5 s

    await engine.run_until(sent_at + 7 * NS)
    [(_, key, age)] = engine.reconciliation.questioned
    assert key == trade.entry_key and 5.0 <= age < 6.0
    [warning] = [r.getMessage() for r in caplog.records if "no acknowledgement" in r.getMessage()]
    assert trade.entry_key in warning and "5." in warning
    assert record.status is OrderStatus.SUBMITTED  # adopted: the venue holds it working
    [working] = [o for o in broker.venue.exchange.orders.values() if o.order.ref == trade.entry_key]
    assert record.order_id == working.order_id and working.status == "working"
    assert at_venue(engine)[trade.entry_key] == 1  # never sent twice
    assert engine.reconciliation.resolved == [(trade.entry_key, "adopted: working at the broker")]

    engine.executor.cancel(trade.entry_key)  # its events route to the adopted record
    await engine.run_until(broker.now_ns() + 2 * NS)
    assert working.status == "cancelled" and record.status is OrderStatus.CANCELLED


async def test_an_order_the_broker_never_got_is_resent_once_only_after_a_complete_book(tmp_path):
    engine, broker = await engine_on(tmp_path)
    broker.lose_next, broker.book_partial = 1, True
    sent_at = broker.now_ns()
    trade = engine.submit(far_limit(engine, "SIM002"))
    record = engine.executor.orders[trade.entry_key]

    await engine.run_until(sent_at + 12 * NS)  # questioned at 5 s, asked twice: the book is partial
    assert [k for _, k, _ in engine.reconciliation.questioned] == [trade.entry_key]
    assert record.status is OrderStatus.SUBMITTING and at_venue(engine)[trade.entry_key] == 0  # no verdict

    broker.book_partial = False
    await engine.run_until(broker.now_ns() + 8 * NS)
    assert [e["event"] for e in record.events].count("unknown") == 1  # established as unknown, then re-sent
    assert at_venue(engine)[trade.entry_key] == 1 and record.status is OrderStatus.SUBMITTED
    assert engine.reconciliation.resolved == [(trade.entry_key, "unknown at the broker: re-sent with the same key")]


async def test_a_position_changed_behind_the_engines_back_is_unreconciled_once(tmp_path, caplog):
    engine, broker = await engine_on(tmp_path)
    caplog.set_level(logging.ERROR, logger="tickguard.runtime.reconciliation")
    trade = engine.submit(TradeRequest(symbol="SIM001", side=Side.LONG, qty=100, account=ACCOUNT,
                                       rules=[StopLoss(distance=20.0)]))
    await engine.run_until(broker.now_ns() + 35 * NS)  # a pass at 30 s: nothing differs
    assert trade.state.value == "open" and engine.reconciliation.passes >= 1
    assert engine.reconciliation.alerts == [] and engine.reconciliation.differences == {}

    broker.venue.place(BrokerOrder("manual-1", ACCOUNT, "SIM001", Action.BUY, 50, OrderType.MARKET))
    await engine.run_until(broker.now_ns() + 40 * NS)  # the next pass sees it, a pass 5 s later confirms it
    [(_, line)] = engine.reconciliation.alerts
    assert f"{ACCOUNT} SIM001: broker 150" in line and "journal 100" in line
    assert list(engine.reconciliation.differences) == [line]

    await engine.run_until(broker.now_ns() + 120 * NS)  # four more passes: the same difference, not raised again
    assert len(engine.reconciliation.alerts) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error == f"UNRECONCILED: {line}"
    assert trade.open_qty == 100  # never "fixed"


async def test_a_running_pass_is_told_only_what_the_engine_lacks_and_applies_an_unheard_fill_once(tmp_path, caplog):
    """The book of a running pass leaves out the executions the engine applied and the orders it holds final (the
    adapter drops them as it reads: ``KnownToEngine``), so the pass inside a step touches only what may be news - and
    a fill the engine never heard is still in it, applied once by the pass."""
    engine, broker = await engine_on(tmp_path)
    caplog.set_level(logging.WARNING, logger="tickguard.runtime.reconciliation")
    heard = engine.submit(TradeRequest(symbol="SIM001", side=Side.LONG, qty=100, account=ACCOUNT,
                                       rules=[StopLoss(distance=20.0)]))
    await engine.run_until(broker.now_ns() + 2 * NS)
    assert heard.entry_filled == 100
    broker.drop_fills = True
    unheard = engine.submit(TradeRequest(symbol="SIM002", side=Side.LONG, qty=100, account=ACCOUNT,
                                         rules=[StopLoss(distance=20.0)]))
    await engine.run_until(broker.now_ns() + 2 * NS)
    assert unheard.entry_filled == 0  # its execution never reached the engine
    broker.drop_fills = False
    passes = engine.reconciliation.passes
    await engine.run_until(broker.now_ns() + 35 * NS)
    assert engine.reconciliation.passes > passes
    venue_execs = {e.ref: e.exec_id for e in broker.venue.exchange.executions}
    book = broker.last_book
    assert book is not None
    assert [e.exec_id for e in book.executions] == [venue_execs[unheard.entry_key]]  # the heard one left out
    assert heard.entry_key not in book.ended  # held final by the engine
    assert unheard.entry_filled == 100 and heard.entry_filled == 100  # the pass applied it, once
    assert engine.executor.orders[unheard.entry_key].exec_ids == {venue_execs[unheard.entry_key]}
    [found] = [r.getMessage() for r in caplog.records if "found at the broker, not yet heard" in r.getMessage()]
    assert unheard.entry_key in found

    await engine.run_until(broker.now_ns() + 30 * NS)  # the next pass: nothing left to tell
    assert broker.last_book is not book and broker.last_book.executions == [] and broker.last_book.ended == {}
    assert unheard.entry_filled == 100 and engine.reconciliation.differences == {}


def test_a_pass_never_applies_an_execution_the_engine_applied_whatever_order_the_book_names():
    """A fill is applied once and only to the order it belongs to: an execution the executor applied (routed by its
    order id) is no news to a pass, even if the book names another order of ours for it - it used to be applied a
    second time, to that order.  One the engine never applied is applied."""
    a, b = _record("tg:0123abcd:T00001:stop:1", OrderStatus.FILLED), _record("tg:0123abcd:T00002:stop:1",
                                                                            OrderStatus.SUBMITTED)
    a.exec_ids.add("X1")
    applied: list[tuple[str, str]] = []
    executor = SimpleNamespace(orders={a.intent.key: a, b.intent.key: b}, applied_execs={"X1"}, session="",
                               held_elsewhere=set(), journaled_over={},
                               apply_found=lambda r, fill: applied.append((r.intent.key, fill.exec_id)) or True)
    reconciler = Reconciler(executor, SimpleNamespace(trades={}), lambda: 0,  # type: ignore[arg-type]
                            "0123abcd", 30 * NS, 5 * NS, 5 * NS)
    fills = [FillEvent(7, b.intent.key, x, ACCOUNT, "SIM001", Action.SELL, Decimal(5), Decimal(100), 0)
             for x in ("X1", "X2")]
    assert reconciler._executions(OrderBook({}, {}, fills, {})) == []
    assert applied == [(b.intent.key, "X2")]
    assert reconciler._executions(OrderBook({}, {}, fills, {})) == [] and len(applied) == 1  # seen: no news again


async def test_a_failing_order_book_holds_new_entries_not_exits_until_a_complete_pass(tmp_path):
    engine, broker = await engine_on(tmp_path)
    a = engine.submit(TradeRequest(symbol="SIM001", side=Side.LONG, qty=100, account=ACCOUNT,
                                   rules=[StopLoss(distance=20.0), TimeStop(after_seconds=40)]))
    await engine.run_until(broker.now_ns() + 2 * NS)
    assert a.state.value == "open"
    broker.book_fails = True
    await engine.run_until(broker.now_ns() + 29 * NS)  # the pass at 30 s fails
    assert engine.reconciliation.incomplete

    b = engine.submit(TradeRequest(symbol="SIM002", side=Side.LONG, qty=100, account=ACCOUNT,
                                   rules=[StopLoss(distance=20.0)]))
    await engine.run_until(broker.now_ns() + 12 * NS)  # a's time stop fires meanwhile; passes keep failing
    assert a.state.value == "closed"  # the exit went out and filled
    assert at_venue(engine)[b.entry_key] == 0 and b.state.value == "pending_entry"  # the entry waits
    asked = broker.books
    await engine.run_until(broker.now_ns() + 6 * NS)
    assert broker.books > asked  # it keeps asking, every few seconds

    broker.book_fails = False
    await engine.run_until(broker.now_ns() + 8 * NS)
    assert not engine.reconciliation.incomplete
    assert at_venue(engine)[b.entry_key] == 1 and b.state.value == "open"


async def test_at_a_restart_with_an_unreadable_book_nothing_in_flight_is_resent_blind(tmp_path):
    """The order book cannot be read at start-up: an order journaled in flight may have ended at the broker
    meanwhile, so it is not re-sent; the first complete pass decides - re-sent if unknown there, closed if the
    broker ended it."""
    engine, broker = await engine_on(tmp_path)
    venue = broker.venue
    broker.lose_next = 1
    lost = engine.submit(far_limit(engine, "SIM001"))  # journaled and handed over; never reached the venue
    ended = engine.submit(far_limit(engine, "SIM002"))
    await engine.run_until(broker.now_ns() + 1 * NS)  # before the acknowledgement deadline: the engine dies
    [working] = [o for o in venue.exchange.orders.values() if o.order.ref == ended.entry_key]
    venue.cancel(working.order_id)  # cancelled at the broker while the engine is down
    venue.advance_to(venue.now_ns + NS)
    assert working.status == "cancelled" and at_venue(engine)[lost.entry_key] == 0

    again = WaryBroker(venue)
    again.book_fails = True
    restarted = Engine(engine.settings, again, journal=Journal.open(engine.settings.journal.target))
    await restarted.start(sorted(venue.specs))
    assert sorted(restarted.recovery.deferred) == sorted([lost.entry_key, ended.entry_key])
    assert restarted.recovery.resent == [] and restarted.reconciliation.incomplete
    await restarted.run_until(again.now_ns() + 10 * NS)
    assert at_venue(restarted)[lost.entry_key] == 0 and at_venue(restarted)[ended.entry_key] == 1  # nothing blind

    again.book_fails = False
    await restarted.run_until(again.now_ns() + 10 * NS)
    assert at_venue(restarted)[lost.entry_key] == 1  # unknown at the broker: sent once, with its key
    assert at_venue(restarted)[ended.entry_key] == 1  # ended there: closed, never sent again
    assert restarted.executor.orders[ended.entry_key].status is OrderStatus.CANCELLED


def test_which_passes_read_the_whole_day_at_the_broker():
    """A reconnect or an incomplete book: the whole day (IB's completed orders); the interval and a late
    acknowledgement: what the live connection heard, with one routine pass in full_every reading the whole day."""
    from tickguard.runtime.reconciliation import Reconciler

    r = Reconciler(None, None, lambda: 0, "j", 1, 1, 1, full_every=3)  # type: ignore[arg-type]

    def begin(why: str) -> bool:
        r.wanted = why
        r.begin()
        r.running = False
        return r.full

    assert [begin("interval"), begin("acknowledgement deadline"), begin("interval")] == [False, False, True]
    assert begin("reconnect (1102)") is True
    assert begin("interval") is False
    r.state.incomplete = True
    assert begin("interval") is True and begin("acknowledgement deadline") is True


def _record(key: str, status: OrderStatus) -> OrderRecord:
    intent = OrderIntent(key=key, trade_id=key.split(":")[2], leg="stop", user="u", account=ACCOUNT, symbol="SIM001",
                         action=Action.SELL, qty=Decimal(10), order_type=OrderType.MARKET, limit_price=None,
                         priority=PriorityClass.EXIT_CRITICAL, created_ns=0)
    return OrderRecord(intent, status=status, order_id=7)


def test_a_pass_reports_every_order_the_journal_has_at_the_broker_that_the_broker_does_not_hold():
    """Of a day's orders, those the journal holds as at the broker (submitted, partially filled, cancelling) and the
    broker's complete book does not hold working are differences, in key order; ended ones are not, whatever the
    book says of them (the pass filters the day's orders before it sorts them)."""
    orders = {f"tg:0123abcd:T{i:05d}:stop:1": _record(f"tg:0123abcd:T{i:05d}:stop:1", status)
              for i, status in enumerate([OrderStatus.FILLED, OrderStatus.CANCELLING, OrderStatus.SUBMITTED,
                                          OrderStatus.CANCELLED, OrderStatus.PARTIALLY_FILLED, OrderStatus.SUBMITTED,
                                          OrderStatus.SUBMITTING, OrderStatus.REJECTED])}
    keys = list(orders)
    executor = OrderExecutor(SimpleNamespace(), SimpleNamespace(), lambda: 0)  # type: ignore[arg-type]
    for record in reversed(orders.values()):  # the executor's own order is no order: the report is in key order
        executor.restore(record, set())
    reconciler = Reconciler(executor, SimpleNamespace(trades={}), lambda: 0,  # type: ignore[arg-type]
                            "0123abcd", 30 * NS, 5 * NS, 5 * NS)
    book = OrderBook(working={keys[5]: (7, Decimal(0))}, ended={keys[2]: (7, OrderStatus.CANCELLED)}, executions=[],
                     positions={})
    assert reconciler._open_orders(book) == [
        f"order {keys[1]}: cancelling in the journal, unknown at the broker",
        f"order {keys[2]}: submitted in the journal, cancelled at the broker",
        f"order {keys[4]}: partially_filled in the journal, unknown at the broker",
    ]


async def test_after_an_unreadable_start_the_first_complete_pass_knows_the_orders_of_trades_already_over(tmp_path):
    """The start's book could not be read; the first complete pass lists the orders of trades closed before the
    restart (the broker's book of the day).  They are known from the journal's recent orders of trades over, read at
    the start - not looked up inside a step (a review measured 0.16-0.4 s for 10,000 keys): no strays, no
    differences, nothing cancelled."""
    engine, broker = await engine_on(tmp_path)
    venue = broker.venue
    trade = engine.submit(TradeRequest(symbol="SIM001", side=Side.LONG, qty=100, account=ACCOUNT,
                                       rules=[StopLoss(distance=0.02)]))
    while trade.state.value != "closed":
        await engine.run_until(broker.now_ns() + NS)
    engine.journal.close()
    again = WaryBroker(venue)
    again.book_fails = True
    restarted = Engine(engine.settings, again, journal=Journal.open(engine.settings.journal.target))
    await restarted.start(sorted(venue.specs))
    key = f"{engine.trades.key_prefix}{trade.id}:stop:1"
    assert restarted.reconciliation.incomplete and key in restarted.executor.journaled_over  # from the journal alone
    lookups: list[list[str]] = []
    held = restarted.journal.orders_held
    restarted.journal.orders_held = lambda keys: lookups.append(list(keys)) or held(keys)  # type: ignore[method-assign]
    again.book_fails = False
    await restarted.run_until(again.now_ns() + 70 * NS)  # the first complete pass, and two more
    assert not restarted.reconciliation.incomplete and restarted.reconciliation.passes >= 3
    assert lookups == []  # nothing looked up inside a step: the journal's recent orders over were read at the start
    assert restarted.reconciliation.differences == {} and restarted.reconciliation.alerts == []
    assert [o.status for o in venue.exchange.orders.values()].count("cancelled") == 0
    restarted.journal.close()


def test_an_execution_the_book_lists_under_two_orders_is_applied_to_one_only():
    """Found by an independent review: the pass read the executor's applied executions once, before its loop, so an
    exec id the book listed twice (under two orders) was applied to both.  The executor itself refuses an exec id
    applied to another order already."""
    executor = OrderExecutor(SimpleNamespace(), SimpleNamespace(on_fill=lambda *a: None), lambda: 0)  # type: ignore[arg-type]
    x, y = _record("tg:0123abcd:T00001:stop:1", OrderStatus.SUBMITTED), _record("tg:0123abcd:T00002:stop:1",
                                                                              OrderStatus.SUBMITTED)
    executor.restore(x, set())
    executor.restore(y, set())
    reconciler = Reconciler(executor, SimpleNamespace(trades={}), lambda: 0,  # type: ignore[arg-type]
                            "0123abcd", 30 * NS, 5 * NS, 5 * NS)
    fills = [FillEvent(7, r.intent.key, "E1", ACCOUNT, "SIM001", Action.SELL, Decimal(5), Decimal(100), 0)
             for r in (x, y)]
    reconciler._executions(OrderBook({}, {}, fills, {}))
    assert (x.filled, y.filled) == (Decimal(5), Decimal(0)) and executor.misrouted_fills == 1


def test_an_execution_of_another_order_found_in_the_book_never_moves_this_order_onto_its_id():
    """Found by an independent review: a pass adopted an order under the order id of an execution the book listed
    for it before applying the execution - refused as another order's, it had still moved this order onto that
    order's id, so the other order's later fills went to this one and a cancel of this one cancelled the other."""
    executor = OrderExecutor(SimpleNamespace(), SimpleNamespace(on_fill=lambda *a: None), lambda: 0)  # type: ignore[arg-type]
    x, y = _record("tg:0123abcd:T00001:stop:1", OrderStatus.SUBMITTED), _record("tg:0123abcd:T00002:stop:1",
                                                                              OrderStatus.SUBMITTED)
    y.order_id = 8
    executor.restore(x, set())  # x: broker order id 7
    executor.restore(y, set())
    reconciler = Reconciler(executor, SimpleNamespace(trades={}), lambda: 0,  # type: ignore[arg-type]
                            "0123abcd", 30 * NS, 5 * NS, 5 * NS)
    e1 = [FillEvent(7, r.intent.key, "E1", ACCOUNT, "SIM001", Action.SELL, Decimal(5), Decimal(100), 0) for r in (x, y)]
    reconciler._executions(OrderBook({}, {}, e1, {}))  # x's execution, listed under y too
    assert y.order_id == 8 and executor._by_order_id[7] is x and executor._by_order_id[8] is y
    assert (x.filled, y.filled) == (Decimal(5), Decimal(0)) and executor.misrouted_fills == 1
    report = RecoveryReport(journal_id="0123abcd")  # recovery's own pass over a book, after a restart
    manager = SimpleNamespace(trades={}, resume_closing=lambda t: None, positions=OpenPositions())
    reconcile(OrderBook({}, {}, e1, {}), manager, executor, report)  # type: ignore[arg-type]
    assert executor._by_order_id[7] is x and executor.misrouted_fills == 2 and y.filled == 0  # (y: re-sent, unknown)
