"""IB's order statuses, mapped onto the engine's order states (``core.order_state.OrderStatus``).

``IB_STATUS`` is the whole table: every status ib_async knows (``ib_async.order.OrderStatus``; a test keeps
the two in step).  ``None`` means the status says nothing about the order's state.  What the adapter then
*reports* is narrower (see ``IBBroker._on_status``): the first acknowledgement, and the end of an order
that did not fill - fills close an order in the executor, once every execution has been applied, so IB's
``Filled`` is not reported, and ``PendingCancel`` is not either (the engine knows when it asked; a cancel
from elsewhere ends in ``Cancelled``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ib_async import Trade

from tickguard.core.order_state import OrderStatus

ORDER_CANCELLED = 202  # IB's "Order Canceled - reason:": a cancel, not a rejection

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
    # cancelled (by us, by IB, or after an order error - see ``ib_closing_status`` for rejections)
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


def ib_closing_status(status: OrderStatus, error_code: int | None) -> OrderStatus:
    """The end of an order that did not fill: ``Cancelled`` after an order error (201 rejected, 200 no
    definition, a margin refusal ...) is a rejection; after no error or 202 (cancelled) it is a cancel."""
    if status is OrderStatus.REJECTED or error_code not in (None, ORDER_CANCELLED):
        return OrderStatus.REJECTED
    return OrderStatus.CANCELLED


def ib_ended_status(status: str) -> OrderStatus:
    """A completed order's end, for reconciliation (completed orders carry no error code)."""
    mapped = IB_STATUS.get(status)
    if mapped is OrderStatus.FILLED or mapped is OrderStatus.REJECTED:
        return mapped
    return OrderStatus.CANCELLED


def last_error(trade: Trade) -> tuple[int | None, str]:
    """The most recent error code and message ib_async logged for a trade."""
    for entry in reversed(trade.log):
        if entry.errorCode:
            return entry.errorCode, entry.message
    return None, ""
