"""IB's order-efficiency ratio per account and day (core/order_efficiency.py)."""

from tickguard.core.order_efficiency import EfficiencyTracker


def test_the_ratio_counts_orders_and_cancels_per_execution_per_account_and_day():
    t = EfficiencyTracker(bound=2.0, min_orders=4)
    for _ in range(3):
        t.order("A", "2026-11-30")
    t.cancel("A", "2026-11-30")
    assert not t.over("B", "2026-11-30") and t.today("2026-11-30")["A"].ratio is None
    assert t.over("A", "2026-11-30")  # four messages, no execution yet
    t.execution("A", "2026-11-30")
    t.execution("A", "2026-11-30")
    assert t.today("2026-11-30")["A"].ratio == 2.0 and not t.over("A", "2026-11-30")  # at the bound, not above
    t.order("A", "2026-11-30")
    assert t.over("A", "2026-11-30")
    assert not t.over("A", "2026-12-01")  # a new day starts clean


def test_below_the_minimum_the_ratio_is_not_applied():
    t = EfficiencyTracker(bound=2.0, min_orders=10)
    for _ in range(9):
        t.order("A", "d")
    assert not t.over("A", "d")
