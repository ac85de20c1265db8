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

from ib_async import IB, Client, Contract, Order, OrderStatus, Trade
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


class SilentClient(Client):
    """ib_async's ``Client`` that encodes a request exactly as the connected one (``real``) does - its server
    version, its field formatting - and sends nothing: ``sendMsg`` keeps the message (``last``) and drops it.  It
    never connects (no socket: ``isConnected`` only says yes so that ``send`` encodes).

    Why: the exit rehearsal (runtime/exit_rehearsal.py) encodes a stop's order with it between exits, so that
    ``Client.placeOrder`` and ``Client.send`` - ~0.15 ms of an exit cold, building and formatting ~150 fields - are
    warm in the CPU's caches when the stop fires.  tests/adapters/ib/test_placing.py compares its message with the
    one the connected client sends for the same order."""

    def __init__(self, real: Client) -> None:
        super().__init__(real.wrapper)
        self._real = real
        self.last: str | None = None

    def encodes_for(self, client: Client) -> bool:
        """Does it encode as ``client`` does (made from it)?"""
        return self._real is client

    def isConnected(self) -> bool:
        return True

    def serverVersion(self) -> int:
        return self._real.serverVersion()

    def sendMsg(self, msg: str) -> None:
        self.last = msg

    def encode_order(self, contract: Contract, order: Order) -> str | None:
        """The placeOrder message for ``order`` (order id 0: none is taken), as the connected client would send it."""
        self.last = None
        self.placeOrder(0, contract, order)
        return self.last
