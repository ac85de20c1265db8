"""The one message budget (core/message_budget.py) over the throttle: sends, holds, refusals, charges."""

from __future__ import annotations

from decimal import Decimal

from conftest import FakeClock
from tickguard.core.message_budget import MessageBudget, order_lane
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass, TriggerInfo
from tickguard.core.throttle import Lane, ThrottleLimits

SECOND = 1_000_000_000


def budget(clock: FakeClock, rate: int = 3, burst: int = 3, **limits) -> MessageBudget:
    return MessageBudget(ThrottleLimits(rate=rate, burst=burst, **limits), clock)


def test_a_send_goes_at_once_when_the_budget_has_room_and_waits_otherwise():
    clock, sent = FakeClock(), []
    b = budget(clock)
    for i in range(5):
        assert b.send(f"m{i}", Lane.EXIT, lambda i=i: sent.append(i)) is None
    assert sent == [0, 1, 2]  # the rest waits for the window
    assert b.next_deadline_ns() == clock.now + SECOND
    clock.advance(1)
    assert b.drain() == 2 and sent == [0, 1, 2, 3, 4]


def test_holding_offers_everything_first_then_sends_the_most_urgent():
    clock, sent = FakeClock(), []
    b = budget(clock, rate=2, burst=2)
    with b.holding():
        b.send("entry", Lane.ENTRY, lambda: sent.append("entry"))
        b.send("far", Lane.EXIT, lambda: sent.append("far"), risk=(-1,))
        b.send("deep", Lane.EXIT, lambda: sent.append("deep"), risk=(-5,))
        assert sent == []
    assert sent == ["deep", "far"]  # the entry decided first waits: the exits were more urgent


def test_an_entry_refused_at_its_bound_or_after_its_wait_says_why():
    clock, refusals = FakeClock(), []
    b = budget(clock, rate=1, burst=1, queue_max={Lane.ENTRY: 1}, wait_max_ns={Lane.ENTRY: 2 * SECOND})
    b.send("exit", Lane.EXIT, lambda: None)  # spends the budget
    assert b.send("e1", Lane.ENTRY, lambda: None, refused=refusals.append) is None  # queued
    why = b.send("e2", Lane.ENTRY, lambda: None)
    assert why is not None and "ENTRY queue full" in why
    b.send("x2", Lane.EXIT, lambda: None)  # exits keep the entry waiting
    clock.advance(2.5)
    b.drain()
    assert len(refusals) == 1 and "waited" in refusals[0] and "e1" in refusals[0]


def test_a_withdrawn_message_spends_nothing_and_a_charge_counts():
    clock, sent = FakeClock(), []
    b = budget(clock, rate=1, burst=1)
    b.send("a", Lane.EXIT, lambda: sent.append("a"))
    b.send("b", Lane.ENTRY, lambda: sent.append("b"))
    assert b.withdraw("b") and not b.withdraw("b")
    clock.advance(1.5)
    b.charge()  # a message nobody queued (the client's start-up sync) took this second's budget
    b.send("c", Lane.EXIT, lambda: sent.append("c"))
    assert sent == ["a"] and b.spent == 2 and b.charged == 1


def intent(priority: PriorityClass, qty: int, level: str | None, price: str | None) -> OrderIntent:
    trigger = None if level is None else TriggerInfo("stop_loss", Decimal(level), Decimal(price), 1, 1)
    return OrderIntent("k", "T1", "stop", "u", "A", "AAA", Action.SELL, Decimal(qty), OrderType.MARKET, None,
                       priority, 0, trigger)


def test_an_exit_deeper_through_its_level_is_more_at_risk_then_the_larger():
    deep = order_lane(intent(PriorityClass.EXIT_CRITICAL, 10, "100.00", "98.00"))  # 2 % through
    shallow = order_lane(intent(PriorityClass.EXIT_CRITICAL, 99, "10.00", "9.99"))  # 0.1 % through
    bigger = order_lane(intent(PriorityClass.EXIT_CRITICAL, 20, "100.00", "98.00"))
    target = order_lane(intent(PriorityClass.EXIT, 500, "100.00", "90.00"))
    entry = order_lane(intent(PriorityClass.ENTRY, 1, None, None))
    assert sorted([entry, target, shallow, deep, bigger]) == [bigger, deep, shallow, target, entry]
    assert entry[0] is Lane.ENTRY and target[0] is Lane.EXIT


def test_inside_a_hold_exits_go_early_while_half_a_burst_is_left_and_wait_for_its_end_after():
    """``release_exits`` lets the exits queued so far out of a hold (the engine calls it after each symbol's exits
    are committed) - never entries or cancels, and only while the budget has at least half a burst: in a storm
    the hold's end decides, most at risk first."""
    clock, sent = FakeClock(), []
    b = budget(clock, rate=10, burst=10)
    with b.holding():
        b.send("entry", Lane.ENTRY, lambda: sent.append("entry"))
        b.send("cancel", Lane.CANCEL_MODIFY, lambda: sent.append("cancel"))
        b.send("a", Lane.EXIT_CRITICAL, lambda: sent.append("a"))
        assert b.release_exits() == 1 and sent == ["a"]
        for i in range(4):
            b.send(f"b{i}", Lane.EXIT, lambda i=i: sent.append(f"b{i}"))
        assert b.release_exits() == 4  # 9 of 10 left before: room for half a burst
        b.send("late", Lane.EXIT, lambda: sent.append("late"), risk=(-1,))
        b.send("deep", Lane.EXIT, lambda: sent.append("deep"), risk=(-9,))
        assert b.release_exits() == 2  # half a burst left (5 of 10): they go, the deeper first
        b.send("c", Lane.EXIT, lambda: sent.append("c"))
        assert b.release_exits() == 0 and sent[-1] == "late"  # 3 left: less than half a burst - it waits
    assert sent == ["a", "b0", "b1", "b2", "b3", "deep", "late", "c", "cancel", "entry"]
