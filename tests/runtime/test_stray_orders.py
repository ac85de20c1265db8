"""Orders of this journal at the broker that the journal never recorded (runtime/stray_orders.py).

Write-ahead keeps this engine from producing them, so they are made here by hand: an order placed at the
simulated exchange with the engine's own key.  A restart must take over one whose trade is live (its stop is
then never sent a second time) and cancel, unapplied, one whose trade the journal does not know.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from decimal import Decimal
from typing import Any

from test_recovery import ACCOUNT, NS, opened, settings, started

from tickguard.adapters.broker import BrokerOrder, KnownToEngine, OrderBook
from tickguard.adapters.sim.broker import SimBroker
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Action, OrderType, Side
from tickguard.core.order_state import OrderStatus
from tickguard.core.trades import Trade, TradeRequest
from tickguard.runtime.engine import Engine


def req(symbol: str) -> TradeRequest:
    return TradeRequest(symbol=symbol, side=Side.LONG, qty=100, account=ACCOUNT, rules=[StopLoss(distance=2.0)])


async def with_live_trade(s) -> tuple[Engine, str, Trade, str]:
    """An engine with one open trade; its symbol, and the key the engine would give its stop's first exit."""
    engine = await started(s)
    sym = sorted(engine.venue.specs)[0]
    trade = await opened(engine, req(sym))
    return engine, sym, trade, f"{engine.trades.key_prefix}{trade.id}:stop:1"


async def test_a_live_trades_exit_found_at_the_broker_is_taken_over_not_sent_again(tmp_path):
    s = settings(str(tmp_path / "j.db"))
    a, sym, trade, key = await with_live_trade(s)
    venue = a.venue
    a.journal.close()
    venue.place(BrokerOrder(key, ACCOUNT, sym, Action.SELL, Decimal(100), OrderType.MARKET))  # sent, never journaled
    venue.advance_to(venue.now_ns + 2 * NS)
    b = await started(s, venue)
    restored = b.trades.trades[trade.id]
    assert any(key in line for line in b.recovery.adopted)
    await b.run_until(b.broker.now_ns() + 10 * NS)
    assert restored.state.value == "closed" and restored.close_reason == "stop_loss"
    sent = [o for o in venue.exchange.orders.values() if o.order.ref.startswith(f"{b.trades.key_prefix}{trade.id}:")]
    assert [o.order.ref for o in sent].count(key) == 1 and len(sent) == 2  # the entry and that one exit
    assert venue.positions(ACCOUNT).get(sym, 0.0) == 0.0
    assert b.journal.orders_of([trade.id])[-1]["order_key"] == key



async def test_a_stray_known_only_from_its_executions_is_taken_over(tmp_path, monkeypatch):
    """IB's completed orders need not list a filled order the day's executions still hold: a stray that filled
    is then known from its executions alone, and is taken over all the same (its fills applied once)."""
    s = settings(str(tmp_path / "j.db"))
    a, sym, trade, key = await with_live_trade(s)
    venue = a.venue
    a.journal.close()
    venue.place(BrokerOrder(key, ACCOUNT, sym, Action.SELL, Decimal(100), OrderType.MARKET))  # sent, never journaled
    venue.advance_to(venue.now_ns + 2 * NS)
    book_of = SimBroker.order_book

    async def without_its_end(self: SimBroker, full: bool = True, known: KnownToEngine | None = None) -> OrderBook:
        book = await book_of(self, full, known)
        return dataclasses.replace(book, ended={k: v for k, v in book.ended.items() if k != key})

    monkeypatch.setattr(SimBroker, "order_book", without_its_end)
    b = await started(s, venue)
    assert key not in (await b.broker.order_book()).ended and any(key in line for line in b.recovery.adopted)
    restored = b.trades.trades[trade.id]
    await b.run_until(b.broker.now_ns() + 10 * NS)
    assert restored.state.value == "closed" and restored.exited == 100  # its fill applied once, nothing sent
    assert [o.order.ref for o in venue.exchange.orders.values()].count(key) == 1


async def test_an_order_of_this_journal_for_an_unknown_trade_is_cancelled_and_reported(tmp_path):
    s = settings(str(tmp_path / "j.db"))
    a = await started(s)
    sym = sorted(a.venue.specs)[0]
    venue = a.venue
    far = round(venue.last_ticks[sym].bid * 0.5, 2)  # a limit that never fills: it stays working
    key = f"{a.trades.key_prefix}T09999:entry"
    a.journal.close()
    order_id = venue.place(BrokerOrder(key, ACCOUNT, sym, Action.BUY, Decimal(10), OrderType.LIMIT, Decimal(str(far))))
    venue.advance_to(venue.now_ns + NS)
    b = await started(s, venue)
    assert any(key in line and "cancelled" in line for line in b.recovery.mismatches)
    assert venue.exchange.orders[order_id].status == "cancelled"
    assert "T09999" not in b.trades.trades


async def test_a_stray_appearing_while_running_is_taken_over_by_the_next_reconciliation_pass(tmp_path):
    engine, sym, trade, key = await with_live_trade(settings(str(tmp_path / "j.db")))
    venue = engine.venue
    venue.place(BrokerOrder(key, ACCOUNT, sym, Action.SELL, Decimal(100), OrderType.MARKET))  # behind its back
    await engine.run_until(engine.broker.now_ns() + int(engine.settings.engine.reconcile_interval_s * NS) + 5 * NS)
    assert key in engine.executor.orders and trade.state.value == "closed"
    assert any("taken over" in how for k, how in engine.reconciliation.resolved if k == key)
    sent = [o.order.ref for o in venue.exchange.orders.values() if o.order.ref.startswith(key.rsplit(":", 2)[0])]
    assert sent.count(key) == 1 and venue.positions(ACCOUNT).get(sym, 0.0) == 0.0


async def test_a_live_trades_working_exit_found_at_the_broker_is_taken_over_from_its_details_not_cancelled(tmp_path):
    """An exit sent before its commit that has not executed yet (a limit above the market) is known only from the
    broker's record of the order (``OrderBook.details``): the reconciliation's own-orders filter must pass those on,
    or the exit is cancelled as an order nobody owns - and the trade left without it."""
    s = settings(str(tmp_path / "j.db"))
    a, sym, trade, key = await with_live_trade(s)
    venue = a.venue
    high = round(venue.last_ticks[sym].ask * 1.5, 2)  # a SELL limit far above the market: it stays working
    a.journal.close()
    exit_order = BrokerOrder(key, ACCOUNT, sym, Action.SELL, Decimal(100), OrderType.LIMIT, Decimal(str(high)))
    order_id = venue.place(exit_order)
    venue.advance_to(venue.now_ns + NS)
    b = await started(s, venue)
    assert any(key in line and "taken over" in line for line in b.recovery.adopted), b.recovery.mismatches
    assert venue.exchange.orders[order_id].status == "working" and b.executor.orders[key].order_id == order_id
    assert b.trades.trades[trade.id].stop.inflight == 100  # its exit is in flight: the stop does not fire another


async def test_a_target_and_the_stop_of_one_trade_found_at_the_broker_are_both_counted_before_it_closes(tmp_path):
    """Two strays of one trade - its first take-profit (half) and its stop (the other half), both sent and never
    journaled: each is taken over, and both are counted before the trade closes.  Counted one by one (the stop
    first: "stop" sorts before "tp1"), the close found the target's half uncovered and sent a third exit for it."""
    from tickguard.core.exit_rules import TakeProfit

    s = settings(str(tmp_path / "j.db"))
    a = await started(s)
    sym = sorted(a.venue.specs)[0]
    trade = await opened(a, TradeRequest(symbol=sym, side=Side.LONG, qty=100, account=ACCOUNT, rules=[
        StopLoss(distance=2.0), TakeProfit(distance=2.0, fraction=Decimal("0.5")),
        TakeProfit(distance=4.0, fraction=Decimal("0.5"))]))
    prefix = f"{a.trades.key_prefix}{trade.id}"
    venue = a.venue
    a.journal.close()
    for leg in ("tp1", "stop"):  # sent, never journaled
        venue.place(BrokerOrder(f"{prefix}:{leg}:1", ACCOUNT, sym, Action.SELL, Decimal(50), OrderType.MARKET))
    venue.advance_to(venue.now_ns + 2 * NS)
    b = await started(s, venue)
    assert sum(f"{prefix}:" in line for line in b.recovery.adopted) == 2
    await b.run_until(b.broker.now_ns() + 10 * NS)
    sent = sorted(o.order.ref for o in venue.exchange.orders.values() if o.order.ref.startswith(f"{prefix}:"))
    assert sent == [f"{prefix}:entry", f"{prefix}:stop:1", f"{prefix}:tp1:1"]  # nothing more was decided
    assert b.trades.trades[trade.id].state.value == "closed" and venue.positions(ACCOUNT).get(sym, 0.0) == 0.0


async def closed(tmp_path) -> tuple[Any, Engine, Trade, str]:
    """An engine whose one trade closed (its stop filled), its journal closed: the settings, the engine, the trade
    and its stop's key - for a restart on the same journal and the same day at the venue."""
    s = settings(str(tmp_path / "j.db"), start="2026-11-23T10:00:00-05:00")
    a = await started(s)
    trade = await opened(a, TradeRequest(symbol="SIM001", side=Side.LONG, qty=Decimal(100), account=ACCOUNT,
                                         rules=[StopLoss(distance=0.02)]))
    while trade.state.value != "closed":
        await a.run_until(a.broker.now_ns() + NS)
    a.journal.close()
    return s, a, trade, f"{a.trades.key_prefix}{trade.id}:stop:1"


async def closed_then_restarted(tmp_path) -> tuple[Engine, Engine, Trade, str]:
    """A trade that closed (its stop filled), then a restart on the same journal and the same day at the venue."""
    s, a, trade, key = await closed(tmp_path)
    return a, await started(s, a.venue), trade, key


async def test_the_orders_of_a_trade_over_before_a_restart_are_no_strays(tmp_path):
    """The broker's book of the day still lists a closed trade's orders and executions; the restarted engine restores
    open trades only.  Those orders are the journal's, not strays: nothing is reported at the start or by the
    passes after it (each was UNRECONCILED, "an order of this journal ... that the journal does not hold", found
    by an independent review), and nothing is cancelled or applied again."""
    a, b, trade, stop_key = await closed_then_restarted(tmp_path)
    assert trade.id not in b.trades.trades  # over: not restored
    assert [line for line in b.recovery.lines() if "UNRECONCILED" in line] == []
    assert {f"{a.trades.key_prefix}{trade.id}:entry", stop_key} <= set(b.executor.journaled_over)
    await b.run_until(b.broker.now_ns() + 100 * NS)  # three passes
    assert b.reconciliation.passes >= 3
    assert b.reconciliation.differences == {} and b.reconciliation.alerts == []
    assert b.executor.holds_final(stop_key)  # so the adapter leaves it out of a running pass's book
    b.journal.close()


async def test_an_order_of_a_trade_over_that_still_works_at_the_broker_is_cancelled_and_reported(tmp_path):
    """An order the journal holds for a trade that is over must not be working: nothing manages it (a fill would open
    a position no trade holds).  One found working at the start is cancelled and reported, as a stray would be."""
    s, a, _trade, key = await closed(tmp_path)  # its stop's order journaled (filled); a second one under it works
    venue = a.venue
    far = round(venue.last_ticks["SIM001"].ask * 1.5, 2)
    venue.place(BrokerOrder(key, ACCOUNT, "SIM001", Action.SELL, Decimal(100), OrderType.LIMIT, far))
    venue.advance_to(venue.now_ns + NS)
    b = await started(s, venue)
    [line] = [line for line in b.recovery.lines() if "UNRECONCILED" in line]
    assert key in line and "an order of a trade that is over" in line and "cancelled" in line
    await b.run_until(b.broker.now_ns() + 2 * NS)
    assert [o.status for o in venue.exchange.orders.values() if o.order.ref == key] == ["filled", "cancelled"]
    b.journal.close()


async def test_an_unreadable_status_of_an_order_over_is_logged_not_a_crash(tmp_path, caplog):
    """Found by an independent review: a closed trade's order with a status that is no order state (a hand-edited or
    damaged journal) stopped the start with a ValueError; it is read as restore reads one - unknown, with an ERROR."""
    s, a, _trade, key = await closed(tmp_path)
    with sqlite3.connect(tmp_path / "j.db") as db:
        db.execute("UPDATE orders SET status = 'pending_cancel' WHERE order_key = ?", (key,))
    b = await started(s, a.venue)
    assert b.executor.journaled_over[key] is OrderStatus.UNKNOWN
    assert any("pending_cancel" in r.getMessage() and key in r.getMessage() for r in caplog.records)
    await b.run_until(b.broker.now_ns() + 35 * NS)
    assert b.reconciliation.passes >= 1
    b.journal.close()


async def test_an_execution_of_an_order_over_that_the_journal_lacks_is_reported_at_the_start_and_while_running(
        tmp_path):
    """An execution at the broker of an order of a trade that is over, which the journal does not hold (a second
    order under its key filled): never applied to any trade, reported UNRECONCILED with its key at the start - and
    one that comes while running is a difference each pass, raised once (an execution with no order was said once
    and never raised)."""
    s, a, _trade, key = await closed(tmp_path)
    venue = a.venue
    venue.place(BrokerOrder(key, ACCOUNT, "SIM001", Action.SELL, Decimal(10), OrderType.MARKET))
    venue.advance_to(venue.now_ns + NS)
    c = await started(s, venue)
    [line] = [line for line in c.recovery.lines() if key in line]
    assert "UNRECONCILED" in line and "an order of a trade that is over; not in the journal, not applied" in line
    venue.place(BrokerOrder(key, ACCOUNT, "SIM001", Action.SELL, Decimal(5), OrderType.MARKET))  # while running
    await c.run_until(c.broker.now_ns() + 70 * NS)
    raised = [line for _, line in c.reconciliation.alerts if key in line]
    assert len(raised) == 1 and "5" in raised[0] and "not in the journal" in raised[0]
    assert raised[0] in c.reconciliation.differences  # standing while the broker shows it
    c.journal.close()


async def test_a_stray_is_looked_up_in_the_journal_once_not_at_every_pass(tmp_path):
    """A key of this journal that the journal does not hold (a true stray, its trade unknown) is looked up in the
    journal once; the passes after it do not read the journal for it again (found by an independent review)."""
    s = settings(str(tmp_path / "j.db"))
    a, sym, _trade, _key = await with_live_trade(s)
    stray = f"{a.trades.key_prefix}T09999:stop:1"
    a.venue.place(BrokerOrder(stray, ACCOUNT, sym, Action.SELL, Decimal(1), OrderType.MARKET))
    lookups: list[list[str]] = []
    held = a.journal.orders_held

    def counted(keys):
        lookups.append(list(keys))
        return held(keys)

    a.journal.orders_held = counted  # type: ignore[method-assign]
    await a.run_until(a.broker.now_ns() + 100 * NS)
    assert a.reconciliation.passes >= 3 and [k for batch in lookups for k in batch].count(stray) == 1
    assert any(stray in line for line in a.reconciliation.differences)  # still a stray, reported
    a.journal.close()
