"""Crash and recovery in one process: the engine object is dropped at chosen moments (its memory is lost,
the journal and the simulated exchange live on), and a new engine recovers from the journal."""

from __future__ import annotations

import contextlib
from collections import Counter
from decimal import Decimal

import pytest

from tickguard.adapters.sim.broker import SimBroker
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss, TakeProfit
from tickguard.core.model import Side
from tickguard.core.trades import TradeRequest
from tickguard.interfaces.demo import demo_trades
from tickguard.runtime.engine import Engine, sim_engine
from tickguard.store.journal import Journal

NS = 1_000_000_000


def settings(target: str, **sim):
    where = {"url": target} if "://" in target else {"path": target}
    return load(None, {"sim": {"speed": 0, "symbols": 3, "seed": 5, **sim}, "journal": where})


async def started(s, venue=None) -> Engine:
    journal = Journal.open(s.journal.target)
    if venue is None:
        engine, venue = sim_engine(s, journal=journal)
    else:
        engine = Engine(s, SimBroker(venue), journal=journal)
    await engine.start(sorted(venue.specs))
    engine.venue = venue  # type: ignore[attr-defined]
    await engine.run_until(engine.broker.now_ns() + 2 * NS)  # first quotes
    return engine


async def step_until(engine: Engine, pred, limit_s: float = 3600, transmit: bool = True) -> None:
    """Step the engine until ``pred()`` holds right after a commit; then transmit or 'crash' before it."""
    end = engine.broker.now_ns() + int(limit_s * NS)
    while engine.broker.now_ns() < end:
        events = await engine.broker.next_events(min(end, engine.trades.next_deadline() or end))
        with engine._batch():
            engine.dispatch(events)
            engine.on_time(engine.broker.now_ns())
        if pred():
            if transmit:
                engine.executor.transmit()
            return
        engine.executor.transmit()
    raise AssertionError("condition never met")


def exit_pending(engine: Engine) -> bool:
    return any(r.intent.is_exit for r in engine.executor._outgoing)


def venue_orders_by_ref(venue) -> Counter:
    return Counter(o.order.ref for o in venue.exchange.orders.values() if o.status != "rejected")


def assert_consistent(engine: Engine, venue) -> None:
    refs = venue_orders_by_ref(venue)
    assert all(n == 1 for n in refs.values()), [r for r, n in refs.items() if n > 1]  # no key sent twice
    ours: Counter = Counter()
    for t in engine.trades.trades.values():
        ours[(t.request.account, t.symbol)] += t.sign * t.open_qty
        assert t.exited <= t.entry_filled  # exact: an over-exit is never "close enough"
    theirs = {(a, s): Decimal(repr(q)) for a in venue.exchange.accounts for s, q in venue.positions(a).items()}
    assert {k: v for k, v in ours.items() if v != 0} == theirs


def req(symbol: str, side=Side.LONG) -> TradeRequest:
    return TradeRequest(symbol=symbol, side=side, qty=100, rules=[StopLoss(distance=0.2), TakeProfit(distance=0.2)])


async def test_exit_journaled_but_never_sent_is_sent_once_after_restart(journal_target):
    s = settings(journal_target)
    a = await started(s)
    sym = sorted(a.venue.specs)[0]
    a.submit(req(sym))
    await step_until(a, lambda: exit_pending(a), transmit=False)  # crash: committed, not sent
    key = next(r.intent.key for r in a.executor._outgoing if r.intent.is_exit)
    venue = a.venue
    assert key not in venue_orders_by_ref(venue)
    b = await started(s, venue)
    assert b.recovery is not None and key in b.recovery.resent
    await b.run_until(b.broker.now_ns() + 60 * NS)
    assert venue_orders_by_ref(venue)[key] == 1
    assert_consistent(b, venue)
    assert all(t.state.value == "closed" for t in b.trades.trades.values())


async def test_exit_sent_and_filled_while_down_is_adopted_not_resent(journal_target):
    s = settings(journal_target)
    a = await started(s)
    sym = sorted(a.venue.specs)[1]
    a.submit(req(sym, Side.SHORT))
    await step_until(a, lambda: exit_pending(a), transmit=True)  # sent; the engine dies before the fill
    key = next(r.intent.key for r in a.executor.orders.values() if r.intent.is_exit)
    venue = a.venue
    venue.advance_to(venue.now_ns + 5 * NS)  # the exchange fills it while nobody listens
    assert venue_orders_by_ref(venue)[key] == 1
    b = await started(s, venue)
    assert b.recovery is not None
    assert any(key in f for f in b.recovery.fills_applied) and key not in b.recovery.resent
    trade = next(iter(b.trades.trades.values()))
    assert trade.state.value == "closed" and trade.exited == trade.entry_filled
    await b.run_until(b.broker.now_ns() + 30 * NS)
    assert venue_orders_by_ref(venue)[key] == 1
    assert_consistent(b, venue)


async def test_level_crossed_while_down_exits_on_first_tick(journal_target):
    s = settings(journal_target)
    a = await started(s)
    sym = sorted(a.venue.specs)[2]
    trade = a.submit(req(sym))
    await step_until(a, lambda: trade.state.value == "open")
    venue = a.venue
    stop = a.trades.stop_price(trade)
    # while down, move time until the bid has gone through the stop
    while venue.last_ticks[sym].bid > stop:
        venue.advance_to(venue.now_ns + NS)
    b = await started(s, venue)
    restored = b.trades.trades[trade.id]
    assert restored.sign * b.trades.stops.effective(restored).level_x == pytest.approx(stop)  # it may have fired
    await b.run_until(b.broker.now_ns() + 5 * NS)
    assert restored.state.value in ("exiting", "closed") and restored.close_reason == "stop_loss"
    await b.run_until(b.broker.now_ns() + 30 * NS)
    assert_consistent(b, venue)


async def test_many_crashes_during_a_busy_session(journal_target):
    """Twenty crashes at varied moments of a run with demo trades: nothing lost, nothing sent twice."""
    s = settings(journal_target, seed=9)
    a = await started(s)
    venue = a.venue
    for i, r in enumerate(demo_trades(16, sorted(venue.specs), 9)):
        a.schedule(venue.now_ns + i * 20 * NS, r)
    engine = a
    pending = list(engine._scheduled)
    for crash in range(20):
        await engine.run_until(engine.broker.now_ns() + (17 + crash * 7) * NS)
        if crash % 3 == 0:  # some crashes land between journaling an exit and sending it
            with contextlib.suppress(AssertionError):
                await step_until(engine, lambda e=engine: exit_pending(e), limit_s=120, transmit=False)
        pending = [p for p in engine._scheduled]
        engine.journal.close()
        venue.advance_to(venue.now_ns + (crash % 4) * NS)  # the market and the exchange go on
        engine = await started(s, venue)
        for at, r in pending:
            engine.schedule(at, r)
    await engine.run_until(engine.broker.now_ns() + 600 * NS)
    assert_consistent(engine, venue)
    journal = Journal.open(s.journal.target, create=False)
    assert len(journal.list_trades()) == 16  # no trade lost
    journal.close()



async def test_order_working_at_the_broker_is_adopted_and_still_cancellable(journal_target):
    s = settings(journal_target)
    a = await started(s)
    venue = a.venue
    sym = sorted(venue.specs)[0]
    far = round(venue.last_ticks[sym].bid * 0.8, 2)
    trade = a.submit(TradeRequest(symbol=sym, side=Side.LONG, qty=100, entry_type="LMT", limit_price=far,
                                  entry_timeout_s=120, rules=[StopLoss(distance=1.0)]))
    await a.run_until(a.broker.now_ns() + 5 * NS)
    [working] = [o for o in venue.exchange.orders.values() if o.status == "working"]
    a.journal.close()
    b = await started(s, venue)
    assert b.recovery is not None and trade.entry_key in b.recovery.adopted
    assert trade.entry_key not in b.recovery.resent
    assert b.executor.orders[trade.entry_key].order_id == working.order_id
    await b.run_until(b.broker.now_ns() + 130 * NS)  # the entry timeout cancels it through the adopted id
    assert working.status == "cancelled"
    assert b.trades.trades[trade.id].state.value == "cancelled"
    assert venue_orders_by_ref(venue)[trade.entry_key] == 1
