"""The effective stop has one home: the tick path, the priority sort, the views and the journal agree on it,
including for a trailing stop held by a trail group (whose level lives in the group, not the book)."""

import math

import pytest

from tickguard.core.effective_stop import BREAK_EVEN, STOP_LOSS, TRAILING_STOP, effective_stop
from tickguard.core.exit_rules import BreakEven, StopLoss, TrailingStop
from tickguard.core.model import OrderIntent, PriorityClass, Side
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest


def test_tightest_component_wins_and_ties_name_the_latest_mover():
    assert effective_stop(None, None, None) is None
    assert effective_stop(95.0, None, None) == effective_stop(95.0, None, None)
    assert effective_stop(95.0, 97.0, None).level_x == 97.0
    assert effective_stop(95.0, 97.0, None).rule == TRAILING_STOP
    assert effective_stop(98.0, 97.0, None).rule == STOP_LOSS
    assert effective_stop(95.0, 97.0, 97.0).rule == BREAK_EVEN  # a tie: break-even moved it last
    assert effective_stop(97.0, 97.0, None).rule == TRAILING_STOP
    assert effective_stop(-105.0, None, -103.0).level_x == -103.0  # signed space: a short's stop at 103


def _open(tm, side, rules, price):
    trade = tm.submit(TradeRequest(symbol="AAA", side=side, qty=100, rules=rules))
    entry = tm.outbox.pop()
    tm.on_fill(OrderIntent(entry.key, trade.id, "entry", "u", "a", "AAA", entry.action, 100, entry.order_type,
                           None, PriorityClass.ENTRY, 0), 100, price, 0, 0.0)
    return trade


@pytest.fixture
def tm(clock, market):
    market.tick("AAA", 100.0, 100.02)
    return TradeManager(clock, market.vol.get, market.quotes.get)


def test_grouped_trailing_stop_is_seen_by_every_reader(tm, market):
    """ATR 2: a 1-ATR trail from 100 sits at 98; a new high of 104 moves the group's mark, so the stop is at
    102 - held by the group, not by the book."""
    grouped = _open(tm, Side.LONG, [StopLoss(distance=3.0), TrailingStop(distance=1.0)], 100.0)
    fixed = _open(tm, Side.LONG, [StopLoss(price=97.0)], 100.0)
    assert grouped.grouped
    tm.evaluate(market.tick("AAA", 104.0, 104.02))
    assert tm.outbox == []
    assert tm.stop_price(grouped) == pytest.approx(102.0)
    assert tm.effective_stop(grouped).rule == TRAILING_STOP
    tick = market.tick("AAA", 103.0, 103.02)
    # distance to stop (live view, priority) uses the group's level: (103 - 102) / 2
    assert tm.distance_to_stop(grouped, tick) == pytest.approx(0.5)
    assert tm.distance_to_stop(fixed, tick) == pytest.approx(3.0)
    assert tm.symbol_risk_at("AAA", tick) == pytest.approx(0.5)  # the nearest stop of the symbol is the group's
    snap = tm.snapshot(grouped)
    assert snap["trail_x"] == pytest.approx(102.0) and snap["best_x"] == pytest.approx(104.0)


def test_short_grouped_stop_priority_matches_its_distance(tm, market):
    short = _open(tm, Side.SHORT, [TrailingStop(distance=1.0)], 100.0)
    assert short.grouped
    tm.evaluate(market.tick("AAA", 95.98, 96.0))
    tick = market.tick("AAA", 96.48, 96.5)
    assert tm.stop_price(short) == pytest.approx(98.0)
    assert tm.distance_to_stop(short, tick) == pytest.approx(0.75)  # (98 - 96.5) / 2
    assert tm.symbol_risk_at("AAA", tick) == pytest.approx(tm.distance_to_stop(short, tick))


def test_the_rule_reported_at_the_fire_is_the_effective_one(tm, market):
    trade = _open(tm, Side.LONG, [StopLoss(distance=1.0), BreakEven(after=1.0, offset=0.5)], 100.0)
    tm.evaluate(market.tick("AAA", 102.5, 102.52))  # 1.25 ATR in profit: break-even arms at 100.5
    assert tm.stop_price(trade) == pytest.approx(100.5) and tm.effective_stop(trade).rule == BREAK_EVEN
    tm.evaluate(market.tick("AAA", 100.5, 100.52))
    [exit_] = tm.outbox
    assert exit_.trigger.rule == BREAK_EVEN and exit_.trigger.level == pytest.approx(100.5)
    assert tm.stop_price(trade) is None and math.isinf(tm.distance_to_stop(trade))  # closing: nothing armed


def test_a_restart_keeps_a_grouped_trailing_stop_at_its_level(tm, clock, market):
    """The trail lived in a trail group (not in the book): after a restore from the snapshot the stop must
    still sit at the trailing level, not fall back to the stop-loss below it."""
    trade = _open(tm, Side.LONG, [StopLoss(distance=2.5), TrailingStop(distance=0.25)], 100.0)  # 95, trail 99.5
    assert trade.grouped
    tm.evaluate(market.tick("AAA", 101.0, 101.02))  # trail 100.5, held by the group
    snap, request = tm.snapshot(trade), trade.request
    fresh = TradeManager(clock, market.vol.get, market.quotes.get)
    restored = fresh.restore(trade.id, request, snap, trade.created_ns)
    assert fresh.stop_price(restored) == pytest.approx(100.5)
    fresh.evaluate(market.tick("AAA", 100.8, 100.82))
    assert fresh.outbox == []
    fresh.evaluate(market.tick("AAA", 100.3, 100.32))
    [exit_] = fresh.outbox
    assert exit_.trigger.rule == TRAILING_STOP and exit_.trigger.level == pytest.approx(100.5)


def test_a_stop_fires_before_a_target_on_another_source(tm, market):
    """One tick reaches the stop (on the bid) and a target that watches the last price: the whole position
    goes out through the stop; the target does not take a slice first."""
    from tickguard.core.exit_rules import TakeProfit, TimeStop
    from tickguard.core.model import TriggerSource

    # another trade books a last-price target first, so the book meets the last-price source first
    _open(tm, Side.LONG, [TakeProfit(price=150.0, trigger=TriggerSource.LAST), TimeStop(after_seconds=3600)], 100.0)
    trade = _open(tm, Side.LONG, [StopLoss(price=99.0), TakeProfit(price=101.0, trigger=TriggerSource.LAST)], 100.0)
    tm.evaluate(market.tick("AAA", 98.9, 98.92, last=101.5))  # a stale last print with a crashed quote
    [exit_] = tm.outbox
    assert exit_.leg == "stop" and exit_.qty == 100 and trade.closing
