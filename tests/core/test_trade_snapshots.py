"""A trade's journal snapshot: levels written as exact prices and read back onto the grid (core.trade_snapshots).

Why: a restart must re-arm every level exactly where it was - a stop one tick looser after a restart is a
missed exit. Old journals hold float levels, with noise (169.39000000000001) or off the grid (97.8734, from
float ATR arithmetic): those are read by the rounding rule, a stop tighter and a target nearer.
"""

from decimal import Decimal

import pytest

from tickguard.core.exit_rules import StopLoss, TakeProfit, TrailingStop
from tickguard.core.model import Side
from tickguard.core.price_grid import PriceGrid
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest


def open_trade(tm: TradeManager, clock, side: Side, rules: list, entry: float):
    trade = tm.submit(TradeRequest(symbol="AAA", side=side, qty=100, rules=rules))
    [intent] = tm.outbox
    tm.outbox = []
    tm.on_fill(intent, 100, entry, clock(), 0)
    return trade


def test_levels_are_written_as_exact_prices_and_read_back_exactly(clock, market):
    market.tick("AAA", 169.35, 169.37)
    tm = TradeManager(clock, market.vol.get, market.quotes.get)
    trade = open_trade(tm, clock, Side.SHORT, [TrailingStop(distance=0.02, unit="price"),
                                               TakeProfit(distance=0.2, unit="price")], 169.37)
    snap = tm.snapshot(trade)
    assert (snap["trail_x"], snap["best_x"], snap["legs"]["tp1"]["level_x"], snap["tick"]) == (
        Decimal("-169.39"), Decimal("-169.37"), Decimal("-169.17"), Decimal("0.01"))
    fresh = TradeManager(clock, market.vol.get, market.quotes.get)
    restored = fresh.restore(trade.id, trade.request, snap, trade.created_ns)
    assert fresh.stop_price(restored) == Decimal("169.39")
    fresh.evaluate(market.tick("AAA", 169.37, 169.39))  # the ask touches the restored level exactly
    [exit_] = fresh.outbox
    assert exit_.trigger.level == exit_.trigger.price == Decimal("169.39")


@pytest.mark.parametrize(
    ("side", "stop", "target", "stop_back", "target_back"),
    [
        (Side.LONG, 169.39000000000001, 171.18999999999999, "169.39", "171.19"),  # float noise: the same price
        (Side.LONG, 97.8734, 104.1266, "97.88", "104.12"),  # off the grid: stop tighter, target nearer
        (Side.SHORT, 102.1266, 95.8734, "102.12", "95.88"),
    ],
)
def test_an_old_journals_float_levels_are_read_onto_the_grid_by_the_rule(clock, market, side, stop, target,
                                                                          stop_back, target_back):
    market.tick("AAA", 100.0, 100.02)
    tm = TradeManager(clock, market.vol.get, market.quotes.get)
    trade = open_trade(tm, clock, side, [StopLoss(distance=1.0), TakeProfit(distance=1.0)], 100.0)
    snap = tm.snapshot(trade)
    s = side.sign
    snap.update(stop_base_x=s * stop, trail_x=None, be_x=None, best_x=s * 100.0)  # as an old journal has them
    snap["legs"]["stop"]["level_x"] = s * stop
    snap["legs"]["tp1"]["level_x"] = s * target
    fresh = TradeManager(clock, market.vol.get, market.quotes.get)
    restored = fresh.restore(trade.id, trade.request, snap, trade.created_ns)
    grid = fresh.grid("AAA")
    assert fresh.stop_price(restored) == Decimal(stop_back)
    assert grid.price(s * restored.targets[0].level_x) == Decimal(target_back)


def test_a_journal_read_with_a_coarser_tick_keeps_every_level_on_the_new_grid(clock, market):
    market.tick("AAA", 100.0, 100.02)
    tm = TradeManager(clock, market.vol.get, market.quotes.get)
    trade = open_trade(tm, clock, Side.LONG, [StopLoss(price=98.03), TakeProfit(price=102.03)], 100.0)
    snap = tm.snapshot(trade)
    market.tick_sizes["AAA"] = "0.05"
    coarse = TradeManager(clock, market.vol.get, market.quotes.get, grid=market.grid)
    restored = coarse.restore(trade.id, trade.request, snap, trade.created_ns)
    assert coarse.stop_price(restored) == Decimal("98.05")  # tighter
    assert PriceGrid("0.05").price(restored.targets[0].level_x) == Decimal("102.00")  # nearer
