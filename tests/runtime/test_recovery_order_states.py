"""Reconciliation decides by the journaled order state: adopt what the broker holds, close what ended there,
send again what never left, and close (never send) an order whose cancel was pending."""

from __future__ import annotations

import logging

from tickguard.adapters.broker import OrderBook
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass
from tickguard.core.open_positions import OpenPositions
from tickguard.core.order_state import OrderStatus
from tickguard.runtime import recovery
from tickguard.runtime.order_executor import OrderExecutor, OrderRecord

S = OrderStatus


class Sink:
    def __init__(self):
        self.placed = []

    def place_order(self, order):
        self.placed.append(order.ref)
        return 100 + len(self.placed)

    def cancel_order(self, order_id):
        raise AssertionError("reconciliation cancels nothing")


class Listener:
    def __init__(self):
        self.closed = []

    def on_fill(self, *args):
        raise AssertionError("no fills here")

    def on_intent_closed(self, intent, status, remaining, reason):
        self.closed.append((intent.key, status))

    def on_commission(self, *args):
        raise AssertionError("no commissions here")


class NoTrades:
    def __init__(self):
        self.trades = {}
        self.positions = OpenPositions()


def record(key: str, status: OrderStatus, order_id: int | None) -> OrderRecord:
    intent = OrderIntent(key, "T1", "stop", "u", "DU1", "AAA", Action.SELL, 100.0, OrderType.MARKET, None,
                         PriorityClass.EXIT_CRITICAL, 0)
    return OrderRecord(intent, status=status, attempts=1, order_id=order_id)


def test_reconciliation_by_state(clock):
    sink, listener = Sink(), Listener()
    ex = OrderExecutor(sink, listener, clock)
    journaled = {
        "never_sent": record("never_sent", S.SUBMITTING, None),
        "lost": record("lost", S.SUBMITTED, 3),  # journaled as at the broker, unknown there
        "waiting": record("waiting", S.RETRY_WAIT, 4),
        "cancel_pending": record("cancel_pending", S.CANCELLING, 5),
        "ended": record("ended", S.SUBMITTED, 6),
        "held": record("held", S.SUBMITTING, None),
        "held_retry": record("held_retry", S.RETRY_WAIT, 7),
        "done": record("done", S.FILLED, 8),
    }
    for rec in journaled.values():
        ex.restore(rec, set())
    book = OrderBook(working={"held": (21, 0.0), "held_retry": (22, 0.0)},
                     ended={"ended": (6, S.REJECTED)}, executions=[], positions={})
    report = recovery.RecoveryReport()
    recovery.reconcile(book, NoTrades(), ex, report)
    status = {k: r.status for k, r in journaled.items()}
    assert status == {"never_sent": S.SUBMITTING, "lost": S.SUBMITTING, "waiting": S.SUBMITTING,
                      "cancel_pending": S.CANCELLED, "ended": S.REJECTED, "held": S.SUBMITTED,
                      "held_retry": S.SUBMITTED, "done": S.FILLED}
    assert sorted(sink.placed) == ["lost", "never_sent", "waiting"]  # each once, same key
    assert sorted(report.resent) == ["lost", "never_sent", "waiting"]
    assert sorted(report.adopted) == ["held", "held_retry"]
    assert sorted(report.closed_at_broker) == ["cancel_pending", "ended"]
    assert sorted(listener.closed) == [("cancel_pending", "cancelled"), ("ended", "rejected")]
    assert [e["event"] for e in journaled["lost"].events] == ["unknown", "submitting", "sent"]
    assert ex.anomalies == 0


def test_an_unreadable_journaled_status_is_unknown_and_said_so(caplog):
    with caplog.at_level(logging.ERROR, logger="tickguard.runtime.recovery"):
        assert recovery._status({"order_key": "k", "status": "working"}) is S.UNKNOWN
    assert "'working' is not an order state" in caplog.text
    assert recovery._status({"order_key": "k", "status": "partially_filled"}) is S.PARTIALLY_FILLED


def test_orders_of_a_halted_trade_are_never_resent_at_recovery(clock):
    """Journaled in flight and unknown at the broker: sent again - unless their trade is halted, then closed
    as cancelled, unsent, and reported."""
    sink, listener = Sink(), Listener()
    ex = OrderExecutor(sink, listener, clock)
    journaled = {"never_sent": record("never_sent", S.SUBMITTING, None), "lost": record("lost", S.SUBMITTED, 3),
                 "waiting": record("waiting", S.RETRY_WAIT, 4)}
    for rec in journaled.values():
        ex.restore(rec, set())
    ex.halted.add("T1")  # as recovery.restore does for a trade journaled halted
    report = recovery.RecoveryReport()
    recovery.reconcile(OrderBook(working={}, ended={}, executions=[], positions={}), NoTrades(), ex, report)
    assert sink.placed == [] and report.resent == []
    assert sorted(report.withheld) == ["lost", "never_sent", "waiting"]
    assert {k: r.status for k, r in journaled.items()} == dict.fromkeys(journaled, S.CANCELLED)
    assert any("NOT sent (trade halted)" in line for line in report.lines())
    assert ex.anomalies == 0 and ex.withheld == 3
