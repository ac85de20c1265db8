"""IB's order statuses, mapped onto the engine's order states (``core.order_state.OrderStatus``).

``IB_STATUS`` is the whole table: every status ib_async knows (``ib_async.order.OrderStatus``; a test keeps
the two in step).  ``None`` means the status says nothing about the order's state.  What the adapter then
*reports* is narrower (see ``IBBroker._on_status``): the first acknowledgement, and the end of an order
that did not fill - fills close an order in the executor, once every execution has been applied, so IB's
``Filled`` is not reported, and ``PendingCancel`` is not either (the engine knows when it asked; a cancel
from elsewhere ends in ``Cancelled``).

``order_verdict`` is the whole decision for one status callback.  A status ib_async derived from an error
(``Wrapper.error`` sets ``Cancelled`` or ``ValidationError`` and logs the code with it) is judged by IB's code
through ``errors.ORDER_ERRORS``, not by ib_async's reading; a status IB sent is judged by ``IB_STATUS``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from ib_async import Trade
from ib_async.order import OrderStatus as IBStatus

from tickguard.adapters.ib.errors import ErrorKind, error_kind
from tickguard.core.order_state import OrderStatus

_IB_ASYNC_PREFIX = re.compile(r"^(?:Error|Warning) -?\d+, reqId -?\d+: ")

IB_STATUS: Mapping[str, OrderStatus | None] = {
    # not yet sent to IB (e.g. waiting for a security definition): still ours to submit
    "ApiPending": OrderStatus.SUBMITTING,
    # transmitted, not yet confirmed by the order destination (ib_async also sets it locally on placeOrder)
    "PendingSubmit": OrderStatus.SUBMITTING,
    # accepted by IB, held until the election criteria are met (or simulated by IB): it can fill
    "PreSubmitted": OrderStatus.SUBMITTED,
    # working at the destination; IB says Submitted for partially filled orders too (see ``ib_order_status``)
    "Submitted": OrderStatus.SUBMITTED,
    # ib_async: an update to a live order (it counts it among the working states)
    "ApiUpdate": OrderStatus.SUBMITTED,
    # a cancel was sent, not yet confirmed: the order can still fill
    "PendingCancel": OrderStatus.CANCELLING,
    # cancelled before IB acknowledged the order
    "ApiCancelled": OrderStatus.CANCELLED,
    # cancelled (by us or by IB; after an order error, ``order_verdict`` judges the error's code)
    "Cancelled": OrderStatus.CANCELLED,
    "Filled": OrderStatus.FILLED,
    # inactive through system, exchange or other issues (IB's rejections and many risk refusals)
    "Inactive": OrderStatus.REJECTED,
    # ib_async: a warning on a live order (on submit it is followed by Submitted; on modify the order keeps
    # its state) - no news about the state
    "ValidationError": None,
}


def ib_order_status(status: str, filled: float = 0.0) -> OrderStatus | None:
    """The engine's state for an IB status; a working order with fills is ``partially_filled``.

    Raises ``KeyError`` for a status IB never documented (the caller logs it and keeps the order's state)."""
    mapped = IB_STATUS[status]
    if mapped is OrderStatus.SUBMITTED and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return mapped


def ib_ended_status(status: str) -> OrderStatus:
    """A completed order's end, for reconciliation (completed orders carry no error code)."""
    mapped = IB_STATUS.get(status)
    if mapped is OrderStatus.FILLED or mapped is OrderStatus.REJECTED:
        return mapped
    return OrderStatus.CANCELLED


def last_error(trade: Trade) -> tuple[int | None, str]:
    """The most recent error code and message (IB's text) ib_async logged for a trade."""
    for entry in reversed(trade.log):
        if entry.errorCode:
            return entry.errorCode, ib_text(entry.message)
    return None, ""


def ib_text(message: str) -> str:
    """IB's own text of an error, without the "Error 201, reqId 5: " that ib_async puts before it."""
    return _IB_ASYNC_PREFIX.sub("", message, count=1)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one status callback means for the engine."""

    status: OrderStatus | None  # the state to report (the adapter reports each end once); None: nothing
    code: int | None = None
    reason: str = ""
    restore: str | None = None  # ib_async took the order as ended on an error that does not end it: its status
    note: str = ""  # why an error changes nothing, for the log


def error_behind(trade: Trade) -> tuple[int, str] | None:
    """The error ib_async set the trade's current status from, if it did: ``Wrapper.error`` appends a log entry
    carrying the code and the status it set; IB's own statuses are logged without a code."""
    if trade.log:
        last = trade.log[-1]
        if last.errorCode and last.status == trade.orderStatus.status:
            return last.errorCode, ib_text(last.message)
    return None


def order_verdict(trade: Trade, filled: Decimal, acknowledged: bool) -> Verdict:
    """The engine's reading of the trade's current status.  ``acknowledged``: IB has confirmed the order
    (PreSubmitted / Submitted seen).  Raises ``KeyError`` for a status IB never documented."""
    error = error_behind(trade)
    if error is not None:
        return _error_verdict(trade, error[0], error[1], acknowledged)
    status = trade.orderStatus.status
    mapped = ib_order_status(status, filled)
    if mapped is OrderStatus.REJECTED:  # Inactive: IB's reason is the refusal logged before it, if any
        code, reason = last_error(trade)
        refusal = code is not None and error_kind(code) in (ErrorKind.REJECTS, ErrorKind.REJECTS_NEW)
        return Verdict(mapped, code if refusal else None, reason if refusal else status)
    if mapped is OrderStatus.CANCELLED:  # a cancel, whatever warning came before it
        code, reason = last_error(trade)
        cancel_code = code is not None and error_kind(code) is ErrorKind.CANCELS
        return Verdict(mapped, code if cancel_code else None, reason if cancel_code else status)
    return Verdict(mapped)


def _error_verdict(trade: Trade, code: int, reason: str, acknowledged: bool) -> Verdict:
    kind = error_kind(code)
    if kind is ErrorKind.CANCELS:
        return Verdict(OrderStatus.CANCELLED, code, reason)
    if kind is ErrorKind.REJECTS or (kind is ErrorKind.REJECTS_NEW and not acknowledged):
        return Verdict(OrderStatus.REJECTED, code, reason)
    restore = None
    if trade.orderStatus.status in IBStatus.DoneStates:  # ib_async ended an order IB did not end
        restore = next((e.status for e in reversed(trade.log[:-1]) if not e.errorCode), IBStatus.PendingSubmit)
    return Verdict(None, code, reason, restore, f"IB {code} does not end the order ({reason})")
