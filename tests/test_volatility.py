import math

import pytest

from tickguard.model import Bar
from tickguard.volatility import NotEnoughBars, adr, snapshot, true_ranges, wilder_atr, wilder_atr_series


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
