import math

import pytest

from tickguard.core.model import Bar
from tickguard.core.price_grid import CENT
from tickguard.core.volatility import NotEnoughBars, adr, snapshot, true_ranges, wilder_atr, wilder_atr_series


def bars(rows):
    return [Bar(i, o, h, lo, c) for i, (o, h, lo, c) in enumerate(rows)]


# Hand-worked: TR1 = 2 (no prior close); TR2 = max(3-1.5, |3-10.5|?..) worked below.
ROWS = [
    (10.0, 11.0, 9.0, 10.5),   # TR = 2.0
    (10.5, 12.0, 10.0, 11.5),  # TR = max(2.0, |12-10.5|=1.5, |10-10.5|=0.5) = 2.0
    (11.5, 11.8, 10.8, 11.0),  # TR = max(1.0, |11.8-11.5|=0.3, |10.8-11.5|=0.7) = 1.0
    (11.0, 14.0, 11.2, 13.5),  # gap up: TR = max(2.8, |14-11|=3.0, |11.2-11|=0.2) = 3.0
    (13.5, 13.6, 12.0, 12.2),  # TR = max(1.6, 0.1, 1.5) = 1.6
]


def test_true_ranges_hand_worked():
    assert true_ranges(bars(ROWS)).tolist() == pytest.approx([2.0, 2.0, 1.0, 3.0, 1.6])


def test_wilder_atr_hand_worked():
    # seed with mean of first 3 TRs = 5/3; then (5/3*2 + 3.0)/3 = 2.1111; then (2.1111*2 + 1.6)/3 = 1.94074
    series = wilder_atr_series(bars(ROWS), period=3)
    assert series.tolist() == pytest.approx([5 / 3, (5 / 3 * 2 + 3.0) / 3, ((5 / 3 * 2 + 3.0) / 3 * 2 + 1.6) / 3])
    assert wilder_atr(bars(ROWS), 3) == pytest.approx(1.9407407407)


def test_atr_period_one_is_last_true_range():
    assert wilder_atr(bars(ROWS), 1) == pytest.approx(1.6)


def test_adr_is_mean_high_low_of_last_period():
    assert adr(bars(ROWS), 2) == pytest.approx(((14.0 - 11.2) + (13.6 - 12.0)) / 2)
    assert adr(bars(ROWS), 5) == pytest.approx((2 + 2 + 1 + 2.8 + 1.6) / 5)


def test_not_enough_bars_is_a_clear_error():
    with pytest.raises(NotEnoughBars, match=r"ATR\(14\) needs at least 14 bars, got 5"):
        wilder_atr(bars(ROWS), 14)
    with pytest.raises(NotEnoughBars, match="ADR"):
        adr(bars(ROWS), 6)


def test_bad_bar_refused():
    with pytest.raises(ValueError, match="high < low"):
        true_ranges(bars([(1.0, 1.0, 2.0, 1.5)]))


def test_snapshot_refuses_zero_volatility():
    flat = bars([(5.0, 5.0, 5.0, 5.0)] * 20)
    with pytest.raises(ValueError, match="volatility must be positive"):
        snapshot("FLAT", flat, 14, 20, 0)
    snap = snapshot("X", bars(ROWS * 4), 3, 5, 7)
    assert snap.symbol == "X" and snap.ts_ns == 7 and math.isfinite(snap.atr)


# ------------------------------------------------------------------------------------- intraday refresh
from tickguard.core.volatility import IntradayRule, MinuteBars, VolSnapshot, blended, regime_changed  # noqa: E402
from tickguard.runtime.vol_refresh import VolatilityRefresher  # noqa: E402

MIN = 60_000_000_000


def test_minute_bars_from_ticks():
    mb = MinuteBars(keep=3)
    prices = [(0, 10.0), (10, 10.5), (20, 9.8), (59, 10.1), (61, 10.2), (119, 10.4), (120, 10.0)]
    done = [mb.add(s * 1_000_000_000, p) for s, p in prices]
    assert done == [False, False, False, False, True, False, True]
    assert [(b.open, b.high, b.low, b.close) for b in mb.bars] == [(10.0, 10.5, 9.8, 10.1), (10.2, 10.4, 10.2, 10.4)]
    for minute in range(3, 8):
        mb.add(minute * MIN, 11.0)
    assert len(mb.bars) == 3  # bounded


def test_blend_hand_worked():
    rule = IntradayRule(period=3, weight=0.5, session_minutes=400.0)
    daily = VolSnapshot("X", 2.0, 3.0, 0)
    bars = [Bar(i, o, h, lo, c) for i, (o, h, lo, c) in enumerate(ROWS[:4])]  # TRs 2, 2, 1, 3
    # ATR(3) over the bars: seed mean(2, 2, 1) = 5/3, then (5/3 * 2 + 3) / 3 = 19/9; x sqrt(400) = 20 -> 42.22
    # w = 0.5 * min(1, 4/3) = 0.5; atr = 0.5 * 2 + 0.5 * 380/9 = 22.111; adr scaled by the same ratio
    snap = blended(daily, bars, rule, 99)
    assert snap.atr == pytest.approx(0.5 * 2.0 + 0.5 * (19 / 9) * 20)
    assert snap.adr == pytest.approx(3.0 * snap.atr / 2.0) and snap.ts_ns == 99
    assert blended(daily, bars[:1], rule, 1) is daily  # too few bars: the daily value stands
    few = blended(daily, bars[:2], IntradayRule(period=4, weight=0.5, session_minutes=400.0), 1)
    assert few.atr == pytest.approx(0.75 * 2.0 + 0.25 * 2.0 * 20)  # w = 0.5 * 2/4


def test_regime_change_detection():
    rule = IntradayRule(regime_bars=2, regime_k=0.5)
    calm = [Bar(0, 10, 10.2, 9.9, 10.1), Bar(1, 10.1, 10.3, 10.0, 10.2)]
    assert not regime_changed(calm, atr_in_force=1.0, rule=rule)  # range 0.4 <= 0.5
    wild = [Bar(0, 10, 10.2, 9.9, 10.1), Bar(1, 10.1, 10.6, 10.0, 10.5)]
    assert regime_changed(wild, atr_in_force=1.0, rule=rule)  # range 0.7 > 0.5


def test_refresher_interval_and_regime_change():
    applied = []
    in_force = {"X": VolSnapshot("X", 0.2, 0.3, 0)}

    def apply(snap):
        applied.append(snap)
        in_force[snap.symbol] = snap

    from tickguard.core.model import Tick

    r = VolatilityRefresher(IntradayRule(period=5, regime_bars=2, regime_k=0.5), 300 * 1_000_000_000, apply,
                            in_force.get)
    r.set_daily(in_force["X"])
    assert r.next_deadline(0) == 300 * 1_000_000_000
    for minute in range(4):  # calm minutes: range 0.02 per bar, an engine step's ticks at a time
        r.on_ticks([Tick("X", CENT.units(px), CENT.units(px), 0, 1, minute * MIN + s * 1_000_000_000, 0)
                    for s, px in ((0, 10.0), (30, 10.01))])
    assert r.urgent == set()
    r.on_time(299 * 1_000_000_000)
    assert applied == []
    r.on_time(300 * 1_000_000_000)  # the interval: refreshed with the intraday blend
    assert len(applied) == 1 and applied[0].atr != 0.2
    # a jump: the last two bars span 0.6 > 0.5 x ATR - one step's ticks completing three bars, each one folded in order
    r.on_ticks([Tick("X", CENT.units(px), CENT.units(px), 0, 1, minute * MIN, 0)
                for minute, px in ((4, 10.0), (5, 10.5), (6, 10.6), (7, 10.6))])
    assert r.urgent == {"X"} and r.next_deadline(7 * MIN) == 7 * MIN  # refresh at once
    r.on_time(7 * MIN)
    assert len(applied) == 2 and r.regime_changes == 1
