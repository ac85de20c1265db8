"""Reviewer: exit limits are the touch +/- offset snapped away from the touch onto the grid (sell down, buy up)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from review_harness import Rig

from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import OrderType


@pytest.mark.parametrize("mode", ["per_tick", "batch"])
@pytest.mark.parametrize("side,offset,tick,quote,want", [
    ("short", "0.003", "0.01", ("100.04", "100.05"), "100.06"),
    ("long", "0.003", "0.01", ("99.95", "99.96"), "99.94"),
    ("long", "0.00001", "0.00005", ("599999.99950", "599999.99955"), "599999.99945"),
    ("short", "0.00001", "0.00005", ("600000.00050", "600000.00055"), "600000.00060"),
    ("short", "0.25", "0.25", ("4500.50", "4500.75"), "4501.00"),
])
def test_exit_limit_snapped_away_from_the_touch(mode, side, offset, tick, quote, want):
    entry = "600000.00000" if tick == "0.00005" else ("4500.25" if tick == "0.25" else "100.00")
    t = Decimal(tick)
    rig = Rig(tick, (entry, str(Decimal(entry) + t)), atr=float(t * 4), mode=mode,
              exit_order_type=OrderType.LIMIT, exit_limit_offset=Decimal(offset))
    i = rig.submit(side, 100, [StopLoss(distance=float(t * 2), unit="price")])
    rig.fill(i, 100, entry)
    rig.tick(*quote)
    rig.flush()
    assert rig.intents, "the stop did not fire"
    assert rig.intents[0].limit_price == Decimal(want)
    assert str(rig.intents[0].limit_price) == want


def test_a_sell_limit_never_goes_to_zero_or_below():
    """One absolute offset for every symbol: a $0.30 stock with exit_limit_offset 0.50 gets a sell limit of -0.20."""
    rig = Rig("0.01", ("0.30", "0.31"), atr=0.02, exit_order_type=OrderType.LIMIT, exit_limit_offset=Decimal("0.50"))
    i = rig.submit("long", 100, [StopLoss(distance=0.02, unit="price")])
    rig.fill(i, 100, "0.31")
    rig.tick("0.29", "0.30")
    assert rig.intents and rig.intents[0].limit_price > 0, rig.intents[0].limit_price
