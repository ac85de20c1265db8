"""A new order placed as ``ib_async``'s ``IB.placeOrder`` places it, without the INFO line it formats every time.

Why: ``IB.placeOrder`` writes the order to the socket, then builds its ``Trade`` and logs it with an f-string -
formatted whether or not anything logs at INFO: the repr of the Trade (every non-default field of the order and
contract), ~0.1-0.2 ms per order.  When several symbols cross in one socket read (a market-wide move), their
exits are released one after another in one step, and that formatting sat between each exit's send and the next
one's (bench/exit_path.py --burst).  Everything else is ``IB.placeOrder``'s new-order branch, step for step: the
same request id, the same message on the wire, the same ``Trade`` in ``wrapper.trades`` under the same key, the
same ``newOrderEvent``.  tests/adapters/ib/test_placing.py compares the two on the fake gateway, and holds a
fingerprint of ``IB.placeOrder``'s source: an ib_async release that changes it fails there, to be read again.
An order id already in ``wrapper.trades`` (a modification, which tickguard never sends) goes through
``IB.placeOrder`` itself.
"""

from __future__ import annotations

import datetime
import logging

from ib_async import IB, Contract, Order, OrderStatus, Trade
from ib_async.objects import TradeLogEntry

log = logging.getLogger(__name__)


def place_new(ib: IB, contract: Contract, order: Order) -> Trade:
    """Send ``order`` and return its ``Trade``, kept live by ib_async as ``IB.placeOrder``'s would be."""
    wrapper = ib.wrapper
    if order.orderId and wrapper.orderKey(wrapper.clientId, order.orderId, order.permId) in wrapper.trades:
        return ib.placeOrder(contract, order)  # a modification: ib_async's own path
    order_id = order.orderId or ib.client.getReqId()
    ib.client.placeOrder(order_id, contract, order)
    now = datetime.datetime.now(wrapper.defaultTimezone)
    key = wrapper.orderKey(wrapper.clientId, order_id, order.permId)
    order.clientId = wrapper.clientId
    order.orderId = order_id
    status = OrderStatus(orderId=order_id, status=OrderStatus.PendingSubmit)
    trade = Trade(contract, order, status, [], [TradeLogEntry(now, status.status)])
    wrapper.trades[key] = trade
    log.debug("placeOrder: new order %s", trade)  # formatted only if someone reads it
    ib.newOrderEvent.emit(trade)
    return trade
