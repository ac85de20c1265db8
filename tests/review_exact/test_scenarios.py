"""An independent review's scenario tests against the "Prices and rounding" contract (README), written from the
contract without the engine's code.  Each pins a finding of that review (all fixed since): a break-even armed by
averaging down, a stop-loss not following the average entry, an ATR-unit break-even firing as it arms, a live
view reading "no last" as a price of 0, a huge feed price crashing the conversion."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from review_harness import Rig

from tickguard.core.exit_rules import BreakEven, StopLoss
from tickguard.core.price_grid import PriceGrid
from tickguard.core.trade_checks import TradeRejected

MODES = ["per_tick", "batch"]


@pytest.mark.parametrize("mode", MODES)
def test_break_even_is_not_armed_by_averaging_down_a_trade_that_was_never_in_profit(mode):
    """Long: 100 @ 100.00, then 50 @ 99.97 (average 99.99).  Every tick afterwards is below the average:
    the trade was never one tick in profit, so the break-even (after 1 tick) must not arm and the
    stop-loss (0.10 below) must hold.  The engine arms the break-even from the *first fill price*
    (its 'best' is the first fill) against the new, lower average and stops the trade out at once."""
    rig = Rig("0.01", ("99.99", "100.00"), atr=0.05, mode=mode)
    i = rig.submit("long", 150, [StopLoss(distance=0.10, unit="price"),
                                 BreakEven(after=0.01, unit="price", offset=0.0)])
    rig.fill(i, 100, "100.00")
    rig.tick("99.97", "99.98")
    rig.fill(i, 50, "99.97")
    for _ in range(3):
        rig.tick("99.97", "99.98")
    assert rig.result() == {}, f"stopped out of a never-profitable trade: {rig.intents[0].trigger}"


@pytest.mark.parametrize("mode", MODES)
def test_break_even_short_mirror_never_in_profit(mode):
    rig = Rig("0.01", ("100.00", "100.01"), atr=0.05, mode=mode)
    i = rig.submit("short", 150, [StopLoss(distance=0.10, unit="price"),
                                  BreakEven(after=0.01, unit="price", offset=0.0)])
    rig.fill(i, 100, "100.00")
    rig.tick("100.02", "100.03")
    rig.fill(i, 50, "100.03")  # average 100.01; every ask afterwards is above it
    for _ in range(3):
        rig.tick("100.02", "100.03")
    assert rig.result() == {}


@pytest.mark.parametrize("mode", MODES)
def test_stop_loss_distance_is_from_the_average_entry_after_averaging_down(mode):
    """README: levels come from the (exact) average entry.  100 @ 100.00 + 100 @ 99.96 -> average 99.98,
    stop 0.05 below it -> 99.93.  A bid of 99.94 is above that stop: it must not fire.  The engine keeps
    the stop sized from the first fill (99.95) because a re-size on a fill is 'ratcheted' like an ATR change."""
    rig = Rig("0.01", ("99.99", "100.00"), atr=0.05, mode=mode)
    i = rig.submit("long", 200, [StopLoss(distance=0.05, unit="price")])
    rig.fill(i, 100, "100.00")
    rig.fill(i, 100, "99.96")
    rig.tick("99.94", "99.95")
    assert rig.result() == {}, f"fired at {rig.intents[0].trigger}"
    assert rig.tm.stop_price(rig.trades[i]) == Decimal("99.93")


def test_live_view_distance_with_a_last_trigger_and_no_last_is_not_treated_as_price_zero():
    """A 'last'-triggered stop, and a quote-only tick (last = 0, 'no price'): the distance to stop used to sort
    and colour the live view must not be computed from a price of 0 (it reads as ~ -2000 ATR: 'through the stop')."""
    rig = Rig("0.01", ("100.00", "100.01"), atr=0.5, mode="per_tick")
    i = rig.submit("long", 100, [StopLoss(distance=1.0, unit="atr", trigger="last")])
    rig.fill(i, 100, "100.00")
    rig.tick("100.00", "100.01")  # no last
    dist = rig.tm.distance_to_stop(rig.trades[i])
    assert math.isinf(dist) or dist > 0, dist


def test_adapter_conversion_of_a_huge_but_not_unset_double_does_not_crash():
    """The contract: any 'no price' marker becomes 0; any other float the nearest tick.  A finite double just
    below IB's unset marker overflows round(price / tick) and raises instead."""
    grid = PriceGrid("0.01")
    grid.units(1.7976931348623155e308)


def test_break_even_in_atr_with_an_offset_beyond_after_is_refused_at_submit():
    """break_even.offset >= after fires the moment it arms: refused for unit='price' by the rule itself, and for
    unit='atr' when the trade is submitted (after=1 ATR = 0.05 now, offset 0.20), naming both figures."""
    rig = Rig("0.01", ("100.00", "100.01"), atr=0.05, mode="per_tick")
    with pytest.raises(TradeRejected, match=r"break_even offset 0.2 must be smaller than its 'after' of 1.0 atr"):
        rig.submit("long", 100, [StopLoss(distance=2.0, unit="atr"), BreakEven(after=1.0, unit="atr", offset=0.20)])
