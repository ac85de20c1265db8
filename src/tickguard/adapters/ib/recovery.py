"""What IB holds, for the journal's recovery at start (a mixin of ``IBBroker``), and the adapter's record of an order.

Orders and executions found at IB are *adopted*: recorded like the orders this process placed, so that their
later statuses, executions and commissions are routed to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from ib_async import IB, Contract, Order
from ib_async.objects import Fill

from tickguard.adapters.broker import OrderBook
from tickguard.adapters.ib.order_status import ib_ended_status
from tickguard.adapters.ib.values import fill_event
from tickguard.config import IBConfig
from tickguard.core.money import ZERO, exact
from tickguard.core.order_state import OrderStatus


@dataclass(slots=True)
class Placed:
    """One order of this connection, as the adapter tracks it (``final``: its end was reported, or it filled)."""

    ref: str
    symbol: str
    qty: Decimal
    order: Order
    contract: Contract
    filled: Decimal = ZERO
    final: bool = False
    submitted: bool = False



class RecoveryMixin:
    ib: IB
    cfg: IBConfig
    _orders: dict[int, Placed]
    _seen_execs: set[str]
    now_ns: Callable[[], int]
    default_account: str

    async def order_book(self) -> OrderBook:
        """IB's view for journal recovery: this client's working orders, completed orders and the day's
        executions (by orderRef), and positions.  Orders found here are adopted so their events route."""
        working: dict[str, tuple[int, Decimal]] = {}
        for trade in self.ib.openTrades():
            ref = trade.order.orderRef
            if not ref:
                continue
            working[ref] = (trade.order.orderId, exact(trade.orderStatus.filled))
            self._adopt(trade.order, trade.contract, exact(trade.orderStatus.filled))
        ended: dict[str, tuple[int, OrderStatus]] = {}
        with contextlib.suppress(Exception):
            done = await asyncio.wait_for(self.ib.reqCompletedOrdersAsync(True), self.cfg.request_timeout_s)
            for trade in done:
                ref = trade.order.orderRef
                if ref and ref not in working:
                    ended[ref] = (trade.order.orderId, ib_ended_status(trade.orderStatus.status))
        executions = []
        for fill in self.ib.fills():
            ex = fill.execution
            if not ex.orderRef or not ex.orderRef.startswith("tg:"):
                continue
            self._adopt_exec(fill)
            executions.append(fill_event(ex.orderId, ex.orderRef, fill, self.now_ns()))
            self._seen_execs.add(ex.execId)
        positions: dict[str, dict[str, Decimal]] = {}
        for pos in self.ib.positions():
            if pos.position:
                acct = positions.setdefault(pos.account, {})
                acct[pos.contract.symbol] = acct.get(pos.contract.symbol, ZERO) + exact(pos.position)
        return OrderBook(working, ended, executions, positions, self.default_account)

    def _adopt(self, order: Order, contract: Contract, filled: Decimal) -> None:
        if order.orderId not in self._orders:
            self._orders[order.orderId] = Placed(order.orderRef, contract.symbol, exact(order.totalQuantity),
                                                  order, contract, filled=filled, submitted=True)

    def _adopt_exec(self, fill: Fill) -> None:
        ex = fill.execution
        placed = self._orders.get(ex.orderId)
        if placed is None:
            qty = exact(ex.cumQty or ex.shares)
            order = Order(orderId=ex.orderId, orderRef=ex.orderRef, totalQuantity=qty)
            self._orders[ex.orderId] = placed = Placed(ex.orderRef, fill.contract.symbol, qty, order, fill.contract)
        if ex.execId not in self._seen_execs:
            placed.filled += exact(ex.shares)
