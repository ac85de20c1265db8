"""IB's order statuses onto the engine's order states: the table covers every status ib_async knows, and the
adapter reports only what the executor needs (the first acknowledgement, the end of an unfilled order)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from ib_async import Contract, MarketOrder, Trade
from ib_async.order import OrderStatus as IBStatus
from ib_async.order import TradeLogEntry

from tickguard.adapters.broker import OrderStatusEvent
from tickguard.adapters.ib.ib_client import IBBroker, Placed
from tickguard.adapters.ib.order_status import (
    IB_STATUS,
    ib_ended_status,
    ib_order_status,
    last_error,
)
from tickguard.config import load
from tickguard.core.order_state import OrderStatus

# Written out independently of the module, from IB's documentation of each status.
EXPECTED = {
    "ApiPending": OrderStatus.SUBMITTING,
    "PendingSubmit": OrderStatus.SUBMITTING,
    "PreSubmitted": OrderStatus.SUBMITTED,
    "Submitted": OrderStatus.SUBMITTED,
    "ApiUpdate": OrderStatus.SUBMITTED,
    "PendingCancel": OrderStatus.CANCELLING,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Cancelled": OrderStatus.CANCELLED,
    "Filled": OrderStatus.FILLED,
    "Inactive": OrderStatus.REJECTED,
    "ValidationError": None,
}


def ib_async_statuses() -> set[str]:
    """Every status ib_async declares on its ``OrderStatus`` (class constants named as their value)."""
    return {v for k, v in vars(IBStatus).items() if isinstance(v, str) and k == v}


def test_the_table_covers_every_ib_async_status_and_nothing_else():
    assert ib_async_statuses() >= {"PendingSubmit", "Submitted", "Cancelled", "Filled", "Inactive"}
    assert set(IB_STATUS) == ib_async_statuses()


def test_the_table_maps_each_status_as_documented():
    assert dict(IB_STATUS) == EXPECTED


def test_ib_async_done_states_are_final_and_active_states_are_not():
    for status in IBStatus.DoneStates:
        mapped = IB_STATUS[status]
        assert mapped is not None and mapped.is_final, status
    for status in IBStatus.ActiveStates:
        mapped = IB_STATUS[status]
        assert mapped is None or not mapped.is_final, status


def test_a_working_order_with_fills_is_partially_filled():
    assert ib_order_status("Submitted", filled=30) is OrderStatus.PARTIALLY_FILLED
    assert ib_order_status("PreSubmitted", filled=1) is OrderStatus.PARTIALLY_FILLED
    assert ib_order_status("Submitted") is OrderStatus.SUBMITTED
    assert ib_order_status("PendingCancel", filled=30) is OrderStatus.CANCELLING
    assert ib_order_status("Filled", filled=100) is OrderStatus.FILLED


def test_a_status_ib_never_documented_is_not_guessed():
    with pytest.raises(KeyError):
        ib_order_status("PartiallyFilled")


def test_completed_orders_end_as_filled_rejected_or_cancelled():
    assert ib_ended_status("Filled") is OrderStatus.FILLED
    assert ib_ended_status("Inactive") is OrderStatus.REJECTED
    assert ib_ended_status("Cancelled") is OrderStatus.CANCELLED
    assert ib_ended_status("ApiCancelled") is OrderStatus.CANCELLED
    assert ib_ended_status("") is OrderStatus.CANCELLED


# ---------------------------------------------------------------------- what the adapter reports


def trade(status: str, errors: tuple[tuple[int, str], ...] = ()) -> Trade:
    t = Trade(Contract(symbol="AAA"), MarketOrder("SELL", 100, orderId=5, orderRef="tg:T1:stop:1"))
    t.orderStatus.status = status
    now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    t.log.extend(TradeLogEntry(now, status, message, code) for code, message in errors)
    return t


@pytest.fixture
def broker() -> IBBroker:
    b = IBBroker(load(None, {}).ib)
    order = MarketOrder("SELL", 100, orderId=5, orderRef="tg:T1:stop:1")
    b._orders[5] = Placed("tg:T1:stop:1", "AAA", Decimal(100), order, Contract(symbol="AAA"))
    return b


def reported(b: IBBroker) -> list[tuple[OrderStatus, str, int | None]]:
    return [(e.status, e.reason, e.code) for e in b._events if isinstance(e, OrderStatusEvent)]


def test_the_adapter_reports_the_first_acknowledgement_only(broker):
    for status in ("PendingSubmit", "ApiPending", "ValidationError", "PendingCancel"):  # not an acknowledgement
        broker._on_status(trade(status))
    assert reported(broker) == []
    for status in ("PreSubmitted", "Submitted", "ApiUpdate", "PendingCancel", "Submitted"):
        broker._on_status(trade(status))
    assert reported(broker) == [(OrderStatus.SUBMITTED, "", None)]


def test_an_unknown_ib_status_is_logged_and_changes_nothing(broker, caplog):
    with caplog.at_level("WARNING", logger="tickguard.adapters.ib"):
        broker._on_status(trade("SomethingNew"))
    assert reported(broker) == [] and "'SomethingNew' is not in the status table" in caplog.text


def test_the_adapter_does_not_report_filled_the_executions_close_the_order(broker):
    broker._on_status(trade("Filled"))
    assert reported(broker) == []


@pytest.mark.parametrize(("status", "errors", "expected"), [
    ("Cancelled", (), (OrderStatus.CANCELLED, "Cancelled", None)),
    ("Cancelled", ((202, "Order Canceled - reason: by client"),),
     (OrderStatus.CANCELLED, "Order Canceled - reason: by client", 202)),
    ("Cancelled", ((201, "Order rejected - reason: margin"),),
     (OrderStatus.REJECTED, "Order rejected - reason: margin", 201)),
    ("ApiCancelled", (), (OrderStatus.CANCELLED, "ApiCancelled", None)),
    ("Inactive", (), (OrderStatus.REJECTED, "Inactive", None)),
])
def test_the_adapter_reports_the_end_once(broker, status, errors, expected):
    broker._on_status(trade(status, errors))
    broker._on_status(trade(status, errors))  # the order is final for the adapter: nothing more
    assert reported(broker) == [expected]


def test_last_error_is_the_most_recent_one():
    t = trade("Cancelled", ((399, "warning"), (201, "Order rejected")))
    assert last_error(t) == (201, "Order rejected")
    assert last_error(trade("Cancelled")) == (None, "")
