"""Reviewer: a trailing stop that moves must be reported to the journal (StopTracker.take_moved), whichever
structure holds it.  A trail in a trail group (auto/bid for a long) moves with the group's mark and is never
reported, so the journal keeps the level it had when it joined; after a crash the restored trail is looser."""

from __future__ import annotations

import pytest
from review_harness import Rig

from tickguard.core.exit_rules import TrailingStop


@pytest.mark.parametrize("trigger", ["mid", "auto"])  # mid: per-trade path; auto: trail group
@pytest.mark.parametrize("mode", ["per_tick", "batch"])
def test_a_moving_trailing_stop_is_reported_for_the_journal(trigger, mode):
    rig = Rig("0.01", ("100.00", "100.01"), atr=0.5, mode=mode)
    i = rig.submit("long", 100, [TrailingStop(distance=0.05, unit="price", trigger=trigger)])
    rig.fill(i, 100, "100.00")
    rig.tick("100.00", "100.01")
    rig.flush()
    rig.tm.stops.take_moved()
    for k in range(1, 11):
        rig.tick(f"{100 + k / 10:.2f}", f"{100 + k / 10 + 0.01:.2f}")
    rig.flush()
    trade = rig.trades[i]
    assert str(rig.tm.stop_price(trade)) in ("100.95", "100.96")  # the stop did move by about a whole point
    assert trade.id in rig.tm.stops.take_moved(), "the stop moved ~1.00 but the journal is never told"
