"""The executor against a recording order sink (our own protocol, not the IB client)."""

import pytest

from tickguard.adapters.broker import FillEvent, OrderStatusEvent
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass
from tickguard.runtime.order_executor import DuplicateIntent, OrderExecutor


class Sink:
    def __init__(self):
        self.placed = []
        self.cancelled = []

    def place_order(self, order):
        self.placed.append(order)
        return len(self.placed)

    def cancel_order(self, order_id):
        self.cancelled.append(order_id)


class Listener:
    def __init__(self):
        self.fills = []
        self.closed = []

    def on_fill(self, intent, qty, price, ts, commission):
        self.fills.append((intent.key, qty, price, commission))

    def on_intent_closed(self, intent, status, remaining, reason):
        self.closed.append((intent.key, status, remaining, reason))


def intent(key="tg:T1:stop:1", qty=100.0):
    return OrderIntent(key, "T1", "stop", "u", "DU1", "AAA", Action.SELL, qty, OrderType.MARKET, None,
                       PriorityClass.EXIT_CRITICAL, 0)


@pytest.fixture
def parts(clock):
    sink, listener = Sink(), Listener()
    return sink, listener, OrderExecutor(sink, listener, clock, max_attempts=3, retry_backoff_ns=1_000)


def status(oid, st, filled=0.0, remaining=100.0, code=None, reason=""):
    return OrderStatusEvent(oid, "tg:T1:stop:1", st, filled, remaining, 0, reason, code)


def test_key_goes_into_order_ref_and_duplicates_are_refused(parts):
    sink, _, ex = parts
    ex.submit(intent())
    assert sink.placed[0].ref == "tg:T1:stop:1"
    with pytest.raises(DuplicateIntent, match="already submitted"):
        ex.submit(intent())
    assert len(sink.placed) == 1 and ex.duplicates_refused == 1


def test_partial_fills_then_filled(parts):
    _, listener, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "submitted"))
    assert rec.status == "working"
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 40, 99.0, 0, 1.0))
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e2", "DU1", "AAA", Action.SELL, 60, 98.0, 0, 1.0))
    assert listener.fills == [("tg:T1:stop:1", 40, 99.0, 1.0), ("tg:T1:stop:1", 60, 98.0, 1.0)]
    assert rec.status == "filled" and rec.avg_price == pytest.approx(98.4)
    assert listener.closed == [("tg:T1:stop:1", "filled", 0.0, "")]
    ex.on_status(status(1, "filled", 100, 0))  # a late duplicate status changes nothing
    assert len(listener.closed) == 1


def test_pacing_rejection_is_retried_with_backoff_then_gives_up(parts, clock):
    sink, listener, ex = parts
    ex.submit(intent())
    ex.on_status(status(1, "rejected", code=100, reason="pacing"))
    assert len(sink.placed) == 1 and ex.next_deadline() == clock() + 1_000
    ex.on_time(clock() + 999)
    assert len(sink.placed) == 1
    ex.on_time(clock() + 1_000)
    assert len(sink.placed) == 2 and sink.placed[1].ref == "tg:T1:stop:1"
    ex.on_status(status(2, "rejected", code=100))
    ex.on_time(clock() + 10_000)
    ex.on_status(status(3, "rejected", code=100, reason="still pacing"))
    assert len(sink.placed) == 3
    assert listener.closed == [("tg:T1:stop:1", "rejected", 100.0, "still pacing")]


def test_final_rejection_is_not_retried(parts):
    sink, listener, ex = parts
    ex.submit(intent())
    ex.on_status(status(1, "rejected", code=201, reason="Order rejected - reason: no permissions"))
    assert len(sink.placed) == 1
    assert listener.closed == [("tg:T1:stop:1", "rejected", 100.0, "Order rejected - reason: no permissions")]


def test_retry_sends_only_the_unfilled_rest(parts, clock):
    sink, _, ex = parts
    ex.submit(intent())
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 30, 99.0, 0))
    ex.on_status(status(1, "rejected", 30, 70, code=1100))
    ex.on_time(clock() + 10**9)
    assert sink.placed[1].qty == 70


def test_cancel_working_and_waiting_orders(parts, clock):
    sink, listener, ex = parts
    ex.submit(intent("k1"))
    ex.cancel("k1")
    assert sink.cancelled == [1]
    ex.on_status(OrderStatusEvent(1, "k1", "cancelled", 0, 100, 0, "cancelled by client"))
    assert listener.closed[-1] == ("k1", "cancelled", 100.0, "cancelled by client")
    ex.submit(intent("k2"))
    ex.on_status(OrderStatusEvent(2, "k2", "rejected", 0, 100, 0, "pacing", 100))
    ex.cancel("k2")  # waiting for its retry: closed without touching the broker
    assert listener.closed[-1][:2] == ("k2", "cancelled") and sink.cancelled == [1]
    ex.on_time(clock() + 10**9)
    assert len(sink.placed) == 2


def test_events_for_unknown_orders_are_counted_not_applied(parts):
    _, listener, ex = parts
    ex.on_fill(FillEvent(99, "x", "e", "DU1", "AAA", Action.BUY, 1, 1.0, 0))
    assert ex.unknown_events == 1 and listener.fills == []
