"""IB's order error codes end an order exactly once, as IB means them - not as ib_async reads them.

The errors are fed through ib_async's own ``Wrapper.error`` and ``Wrapper.orderStatus`` (no socket: the
real code that turns a TWS message into a trade status and the events the adapter listens to), so what is
tested is the adapter's reading of what ib_async really does with each code.  The expected table is written
out here from IB's documented meaning of each code, independently of the adapter's table.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import re
from decimal import Decimal

import pytest
from ib_async import IB, Contract, MarketOrder, Trade
from ib_async.order import OrderStatus as IBStatus
from ib_async.order import TradeLogEntry
from ib_async.wrapper import Wrapper

from tickguard.adapters.broker import OrderStatusEvent
from tickguard.adapters.ib.errors import IB_ASYNC_WARNINGS, ORDER_ERRORS, ErrorKind
from tickguard.adapters.ib.ib_client import IBBroker, Placed
from tickguard.config import load
from tickguard.core.order_state import OrderStatus

CLIENT, ORDER = 7, 5
REF = "tg:T1:stop:1"

# What each code does to the order it names (IB's API message codes; see errors.py for the sources).
EXPECTED_KINDS = {
    100: ErrorKind.REJECTS, 103: ErrorKind.REJECTS, 104: ErrorKind.KEEPS, 105: ErrorKind.KEEPS,
    110: ErrorKind.REJECTS_NEW, 135: ErrorKind.KEEPS, 161: ErrorKind.KEEPS, 200: ErrorKind.REJECTS,
    201: ErrorKind.REJECTS, 202: ErrorKind.CANCELS, 321: ErrorKind.REJECTS_NEW, 329: ErrorKind.KEEPS,
    399: ErrorKind.KEEPS, 404: ErrorKind.KEEPS, 434: ErrorKind.REJECTS_NEW, 10147: ErrorKind.KEEPS,
    10148: ErrorKind.KEEPS, 10349: ErrorKind.KEEPS,
}


def test_the_error_table_says_what_ib_documents():
    assert {code: e.kind for code, e in ORDER_ERRORS.items()} == EXPECTED_KINDS


def test_the_warning_codes_are_ib_asyncs_own():
    """The adapter reads codes outside its table as ib_async does; its copy of ib_async's warning list must be
    the installed ib_async's (an upgrade that changes the list fails here)."""
    source = inspect.getsource(Wrapper.error)
    found = re.search(r"warningCodes = frozenset\(\{([\d,\s]+)\}\)", source)
    assert found is not None
    assert {int(c) for c in found.group(1).split(",")} == IB_ASYNC_WARNINGS
    assert "2100 <= errorCode < 2200" in source


class Wired:
    """An IBBroker on a real (unconnected) ib_async ``IB`` holding one trade of the adapter's."""

    def __init__(self) -> None:
        self.ib = IB()
        self.broker = IBBroker(load(None, {}).ib, ib=self.ib)
        self.ib.wrapper.clientId = CLIENT
        order = MarketOrder("SELL", 100, orderId=ORDER, clientId=CLIENT, orderRef=REF)
        now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
        self.trade = Trade(Contract(symbol="AAA"), order, IBStatus(orderId=ORDER, status="PendingSubmit"), [],
                           [TradeLogEntry(now, "PendingSubmit")])
        self.ib.wrapper.trades[(CLIENT, ORDER)] = self.trade
        self.broker._orders[ORDER] = Placed(REF, "AAA", Decimal(100), order, Contract(symbol="AAA"))

    def status(self, status: str, filled: float = 0.0) -> None:
        """An orderStatus message from IB."""
        self.ib.wrapper.orderStatus(ORDER, status, filled, 100 - filled, 0.0, 1_000_001, 0, 0.0, CLIENT, "", 0.0)

    def error(self, code: int, text: str) -> None:
        """An error message from IB naming the order (reqId = orderId)."""
        self.ib.wrapper.error(ORDER, code, text, "")

    def reported(self) -> list[tuple[OrderStatus, int | None, str]]:
        return [(e.status, e.code, e.reason) for e in self.broker._events if isinstance(e, OrderStatusEvent)]


ACK = (OrderStatus.SUBMITTED, None, "")


@pytest.mark.parametrize(("code", "text", "expected"), [
    (201, "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION YOUR "
          "EQUITY WITH LOAN VALUE [1000 USD] MUST EXCEED THE INITIAL MARGIN [5000 USD]", OrderStatus.REJECTED),
    (201, "Order rejected - reason:no trading permissions", OrderStatus.REJECTED),
    (321, "Error validating request.-'bS' : cause - Invalid account code", OrderStatus.REJECTED),
    (110, "The price does not conform to the minimum price variation for this contract.", OrderStatus.REJECTED),
    (103, "Duplicate order id", OrderStatus.REJECTED),
    (434, "The order size cannot be zero", OrderStatus.REJECTED),
    (200, "No security definition has been found for the request", OrderStatus.REJECTED),
    (100, "Max rate of messages per second has been exceeded:max=50 rec=51 (1)", OrderStatus.REJECTED),
    (202, "Order Canceled - reason:", OrderStatus.CANCELLED),
    (9999, "a code nobody documented", OrderStatus.REJECTED),  # read as ib_async reads it: an error ends it
])
def test_a_new_order_refused_by_ib_ends_once_with_the_code(code, text, expected):
    w = Wired()
    w.error(code, text)
    w.status("Inactive")  # what TWS sends after a rejection (ib_insync #554); a repeat, not news
    w.error(code, text)
    assert w.reported() == [(expected, code, text)]


@pytest.mark.parametrize(("code", "text"), [
    (399, "Order Message: Warning: your order will not be placed at the exchange until 2026-01-05 09:30:00"),
    (404, "Order held while securities are located."),
    (10349, "Order TIF was set to DAY based on order preset."),  # ib_async marks it Cancelled (ib_async #191)
    (2109, "Order Event Warning: Attribute 'Outside Regular Trading Hours' is ignored"),
])
def test_information_on_a_new_order_does_not_end_it(code, text):
    w = Wired()
    w.error(code, text)
    assert w.reported() == []
    assert not w.trade.isDone()  # ib_async's "Cancelled" for 10349 is undone: the order lives at IB
    w.status("Submitted")
    w.status("Filled", 100)
    assert w.reported() == [ACK]  # acknowledged once; the executions close it


@pytest.mark.parametrize(("code", "text"), [
    (321, "Error validating request.-'bS' : cause - Invalid account code"),  # a modification refused
    (110, "The price does not conform to the minimum price variation for this contract."),
    (161, "Cancel attempted when order is not in a cancellable state. Order permId =1000001"),
    (10147, f"OrderId {ORDER} that needs to be cancelled is not found."),
    (10148, f"OrderId {ORDER} that needs to be cancelled cannot be cancelled, state: PendingCancel."),
    (104, "Can't modify a filled order"),
])
def test_a_refused_request_on_a_working_order_leaves_it_working(code, text):
    w = Wired()
    w.status("Submitted")
    w.status("PendingCancel")
    w.error(code, text)
    assert w.reported() == [ACK]
    assert w.trade.orderStatus.status in ("PendingCancel", "ValidationError")  # not ib_async's "Cancelled"
    w.status("Cancelled")  # IB's own word on the order, later: the cancel went through after all
    assert w.reported() == [ACK, (OrderStatus.CANCELLED, None, "Cancelled")]


def test_a_refused_cancel_of_a_filled_order_is_not_a_rejection():
    w = Wired()
    w.status("Submitted")
    w.status("PendingCancel")
    w.error(10148, f"OrderId {ORDER} that needs to be cancelled cannot be cancelled, state: Filled.")
    w.status("Filled", 100)
    assert w.reported() == [ACK]  # no rejected / cancelled: the fills close the order


def test_a_cancel_after_a_warning_is_a_cancel_and_an_inactive_order_is_rejected():
    w = Wired()
    w.error(404, "Order held while securities are located.")
    w.status("Submitted")
    w.status("Cancelled")
    assert w.reported() == [ACK, (OrderStatus.CANCELLED, None, "Cancelled")]  # not "rejected, 404"
    w2 = Wired()
    w2.status("Inactive")
    assert w2.reported() == [(OrderStatus.REJECTED, None, "Inactive")]
    w3 = Wired()  # a refused cancel is not the reason an order went Inactive
    w3.status("Submitted")
    w3.error(161, "Cancel attempted when order is not in a cancellable state. Order permId =1000001")
    w3.status("Inactive")
    assert w3.reported() == [ACK, (OrderStatus.REJECTED, None, "Inactive")]


# ------------------------------------------------------------------------------------------ callback guard


@pytest.mark.parametrize(("callback", "args", "context"), [
    ("_on_status", lambda w: (object(),), "<object"),
    ("_on_exec", lambda w: (w.trade, object()), f"order {ORDER} ref '{REF}'"),
    ("_on_commission", lambda w: (w.trade, object(), object()), f"order {ORDER} ref '{REF}'"),
    ("_on_error", lambda w: (-1, 2103, 12345, None), "2103"),  # a message that is not text
    ("_on_tickers", lambda w: ({"not a ticker"},), "1 item(s)"),
])
def test_a_failing_callback_is_logged_with_context_and_never_raises(callback, args, context, caplog):
    w = Wired()
    if callback == "_on_tickers":
        w.broker._by_ticker[id("not a ticker")] = "AAA"
    with caplog.at_level(logging.ERROR, logger="tickguard.adapters.ib"):
        getattr(w.broker, callback)(*args(w))  # must not raise
    [record] = [r for r in caplog.records if r.name.startswith("tickguard.adapters.ib")]
    assert "callback failed on" in record.getMessage() and context in record.getMessage()
    assert record.exc_info is not None  # the traceback is in the log


def test_ib_async_never_sees_an_exception_from_the_adapter(caplog):
    """Through ib_async's own event: eventkit would log "caused exception for event" if one escaped."""
    w = Wired()
    with caplog.at_level(logging.ERROR):
        w.ib.orderStatusEvent.emit(object())
        w.ib.errorEvent.emit(-1, 2103, 12345, None)
    assert not [r for r in caplog.records if "caused exception" in r.getMessage()]
    assert len([r for r in caplog.records if r.name.startswith("tickguard.adapters.ib")]) == 2
