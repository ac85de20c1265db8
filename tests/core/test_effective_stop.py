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
