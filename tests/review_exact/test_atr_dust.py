"""Reviewer: 'no level is ever off by floating-point dust' (README).  Daily bars whose every range is exactly
k ticks have an ATR of exactly k ticks; a 1-ATR stop must then be k ticks from the entry.  The ATR is computed
in floats (high - low of doubles), lands a hair under k ticks, and the floor drops a whole tick."""

from __future__ import annotations

from decimal import Decimal

import pytest
from review_harness import Rig

from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Bar
from tickguard.core.volatility import snapshot


@pytest.mark.parametrize("low,high,tick,k", [("100.00", "100.02", "0.01", 2), ("169.37", "169.41", "0.01", 4),
                                             ("1.2345", "1.2348", "0.0001", 3)])
def test_a_one_atr_stop_is_exactly_the_daily_range_when_every_range_is_the_same(low, high, tick, k):
    bars = [Bar(i, float(low), float(high), float(low), float(low)) for i in range(30)]
    vol = snapshot("X", bars, 14, 20, 0)
    entry = Decimal(low)
    rig = Rig(tick, (str(entry - Decimal(tick)), low), vol.atr)
    i = rig.submit("long", 100, [StopLoss(distance=1.0, unit="atr")])
    rig.fill(i, 100, low)
    want = entry - k * Decimal(tick)
    assert rig.tm.stop_price(rig.trades[i]) == want, f"ATR {vol.atr!r}"
