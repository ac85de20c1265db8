"""The engine's own figures (runtime/telemetry.py): histogram buckets, the order round trip stage by stage, and the
event-loop lag's maximum over a window every reader sees alike."""

from __future__ import annotations

from decimal import Decimal

from tickguard.adapters.broker import FillEvent, OrderStatusEvent
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass, Tick, TriggerInfo
from tickguard.core.order_state import OrderStatus
from tickguard.runtime.telemetry import LAG_WINDOW_S, Histogram, Telemetry

MS = 1_000_000


def intent(leg: str = "stop", seq: int = 7, rule: str = "stop_loss") -> OrderIntent:
    trigger = None if leg == "entry" else TriggerInfo(rule, Decimal("9.9"), Decimal("9.9"), seq, 0)
    return OrderIntent(f"tg:x:T1:{leg}:1", "T1", leg, "u", "a", "X", Action.SELL, Decimal(1), OrderType.MARKET, None,
                       PriorityClass.EXIT, 0, trigger)


class Wall:
    def __init__(self) -> None:
        self.now = 1_000 * MS

    def __call__(self) -> int:
        return self.now


def test_histogram_buckets_are_upper_bounds_and_cumulate():
    h = Histogram((10, 20))
    for v in (5, 10, 11, 20, 21, 1000):
        h.observe(v)
    assert h.counts == [2, 2, 2] and h.cumulative() == [2, 4, 6] and h.total == 1067 and h.count == 6


def test_an_exit_is_timed_from_its_tick_to_the_wire_then_to_ack_and_fill():
    wall = Wall()
    tel = Telemetry(wall_ticks=True, wall=wall)
    tick = Tick("X", 990, 992, 0, 0.0, 0, wall.now - 2 * MS, 7)  # arrived 2 ms ago on the wall clock
    decided = tel.decided(intent(), lambda s: tick)
    assert decided == wall.now and tel.tick_to_intent.count == 1 and tel.tick_to_intent.total == 2 * MS
    assert tel.exits == {"stop_loss": 1}
    wall.now += 3 * MS
    tel.on_sent(intent(), 41, broker_now_ns=100 * MS, decided_ns=decided)
    assert tel.intent_to_wire["exit"].total == 3 * MS and tel.sent["exit"] == 1
    tel.on_status(OrderStatusEvent(41, "tg:x:T1:stop:1", OrderStatus.SUBMITTED, Decimal(0), Decimal(1), 0), 105 * MS)
    def fill(exec_id: str) -> FillEvent:
        return FillEvent(41, "tg:x:T1:stop:1", exec_id, "a", "X", Action.SELL, Decimal(1), Decimal("9.9"), 0)

    tel.on_fill(fill("e1"), 112 * MS)
    tel.on_fill(fill("e2"), 130 * MS)  # only the first fill times the order
    assert tel.ack["exit"].total == 5 * MS and tel.fill["exit"].total == 12 * MS and tel.fill["exit"].count == 1
    tel.on_status(OrderStatusEvent(41, "tg:x:T1:stop:1", OrderStatus.FILLED, Decimal(1), Decimal(0), 0), 131 * MS)
    assert 41 not in tel._in_flight  # a final status ends its tracking


def test_an_exit_not_fired_by_that_tick_has_no_tick_latency_and_a_rejection_counts_by_code_and_kind():
    tel = Telemetry(wall_ticks=True, wall=Wall())
    other = Tick("X", 990, 992, 0, 0.0, 0, 0, 8)  # a later tick than the trigger's
    tel.decided(intent(seq=7), lambda s: other)
    tel.decided(intent(leg="time", seq=-1, rule="time_stop"), lambda s: other)
    assert tel.tick_to_intent.count == 0 and tel.exits == {"stop_loss": 1, "time_stop": 1}
    tel.on_status(OrderStatusEvent(9, "tg:x:T2:entry", OrderStatus.REJECTED, Decimal(0), Decimal(1), 0, "no",
                                   201), 0)
    tel.on_status(OrderStatusEvent(10, "tg:x:T2:stop:1", OrderStatus.REJECTED, Decimal(0), Decimal(1), 0, "no",
                                   None), 0)
    assert tel.rejected == {("201", "entry"): 1, ("none", "exit"): 1}


def test_the_lag_maximum_is_over_a_window_not_reset_by_a_reader():
    tel = Telemetry()
    tel.loop_lagged(5 * MS, now_s=100.0)
    tel.loop_lagged(2 * MS, now_s=100.5)
    tel.loop_lagged(1 * MS, now_s=130.0)
    assert tel.lag_max(now_s=130.0) == 5 * MS
    assert tel.lag_max(now_s=130.0) == 5 * MS  # a second reader sees the same
    assert tel.lag_max(now_s=100.0 + LAG_WINDOW_S + 1) == 1 * MS  # the 5 ms left the window
    assert tel.loop_lag.count == 3


def test_a_filled_status_before_its_execution_still_times_the_fill_and_a_resend_has_no_decision_time():
    tel = Telemetry(wall=Wall())
    tel.on_sent(intent(), 7, broker_now_ns=0, decided_ns=None)  # a re-send: nothing to time from its decision
    assert tel.intent_to_wire["exit"].count == 0 and tel.sent["exit"] == 1
    tel.on_status(OrderStatusEvent(7, "tg:x:T1:stop:1", OrderStatus.FILLED, Decimal(1), Decimal(0), 0), 4 * MS)
    tel.on_fill(FillEvent(7, "tg:x:T1:stop:1", "e1", "a", "X", Action.SELL, Decimal(1), Decimal("9.9"), 0), 6 * MS)
    assert tel.ack["exit"].total == 4 * MS and tel.fill["exit"].total == 6 * MS
    assert 7 not in tel._in_flight  # ended: filled, and its execution has arrived
