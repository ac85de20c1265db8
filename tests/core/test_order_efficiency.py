"""IB's order-efficiency ratio per account and day (core/order_efficiency.py)."""

from tickguard.core.order_efficiency import EfficiencyTracker


def test_wasted_messages_per_execution_decide_per_account_and_day():
    t = EfficiencyTracker(bound=2.0, min_orders=4)
    for _ in range(3):
        t.order("A", "2026-11-30")
    t.cancel("A", "2026-11-30")
    assert not t.over("A", "2026-11-30")  # four messages, none wasted yet: orders still working
    t.ended_unfilled("A", "2026-11-30")
    t.ended_unfilled("A", "2026-11-30")
    assert t.over("A", "2026-11-30")  # 2 unfilled + 1 cancel, no execution: 3 per (one) execution
    t.execution("A", "2026-11-30")
    t.execution("A", "2026-11-30")
    day = t.today("2026-11-30")["A"]
    assert day.ratio == 2.0 and day.wasted == 1.5 and not t.over("A", "2026-11-30")
    assert not t.over("B", "2026-11-30") and not t.over("A", "2026-12-01")  # other accounts, a new day


def test_a_burst_of_orders_not_yet_executed_is_not_over():
    t = EfficiencyTracker(bound=20.0, min_orders=20)
    for _ in range(500):
        t.order("A", "d")  # 500 market entries sent, executions not back yet
    assert not t.over("A", "d")


def test_below_the_minimum_the_ratio_is_not_applied():
    t = EfficiencyTracker(bound=2.0, min_orders=10)
    for _ in range(5):
        t.order("A", "d")
        t.cancel("A", "d")
        t.ended_unfilled("A", "d")
    assert t.over("A", "d")  # 10 messages: enough, and all wasted
    t2 = EfficiencyTracker(bound=2.0, min_orders=10)
    for _ in range(4):
        t2.order("A", "d")
        t2.ended_unfilled("A", "d")
    assert not t2.over("A", "d")  # 4 messages: too few to judge
