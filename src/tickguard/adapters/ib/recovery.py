"""What IB holds, for the journal's recovery at start (a mixin of ``IBBroker``).

Orders and executions found at IB are *adopted*: recorded like the orders this process placed, so that their
later statuses, executions and commissions are routed to the engine.  Only this client id's are adopted, and an
execution is taken only if it matches its order in every identifying field (``attribution.py``): another API
client's order or execution - the same order id, or the same orderRef - is foreign, logged and left alone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from ib_async import IB, Contract, Order, Trade
from ib_async import OrderStatus as IBOrderStatus
from ib_async.objects import Fill

from tickguard.adapters.broker import BookMark, BrokerOrder, FillEvent, OrderBook
from tickguard.adapters.ib.attribution import AttributionMixin, Owner, Placed, PlacedOrders
from tickguard.adapters.ib.book_reads import BookReads
from tickguard.adapters.ib.order_status import ib_ended_status
from tickguard.adapters.ib.values import fill_event
from tickguard.config import IBConfig
from tickguard.core.money import ZERO, exact
from tickguard.core.order_state import OrderStatus
from tickguard.core.throttle import Lane

log = logging.getLogger(__name__)
_marks = itertools.count(1)  # BookMark tokens


class RecoveryMixin(AttributionMixin):
    ib: IB
    cfg: IBConfig
    _orders: PlacedOrders
    _seen_execs: set[str]
    now_ns: Callable[[], int]
    _emit: Callable[[Any], None]
    default_account: str
    _paced: Callable[[Lane, str], Coroutine[None, None, None]]  # waits for the message budget (pacing.py)
    _book_reads: BookReads  # the book's conversions, kept between passes
    state: Any  # ConnectionState: its reconnect count tells one connection's requests from the next's
    _completed_request: asyncio.Future[list[Trade]] | None = None
    _completed_connection = -1

    async def order_book(self, full: bool = True) -> OrderBook:
        """IB's view for journal recovery: this client's working orders, completed orders and the day's
        executions (by orderRef), and positions.  Orders found here are adopted so their events route.

        ``full``: ask IB for the day's completed orders (a start, a reconnect, an order past its acknowledgement
        deadline).  Without it the ended orders are the ones this connection heard end: IB's answer grows with
        every order of the day (5,000 orders: a quarter-second read that holds the event loop), and on a live
        connection it holds nothing the order statuses did not already say - so routine passes skip it.

        The rest is read at one instant, after the only wait, and marked in the event stream (``BookMark``): the
        book then holds exactly what the events before the mark said, whatever arrived while IB answered."""
        done: list[Trade] = []
        complete = True
        if full:
            done, complete = await self._completed_orders()
        # from here on nothing is awaited
        reads = self._book_reads
        reads.start(self.state.reconnects)
        working: dict[str, tuple[int, Decimal]] = {}
        details: dict[str, BrokerOrder] = {}
        for trade in self._own_trades():
            ref = trade.order.orderRef
            if not ref:
                continue
            working[ref] = (trade.order.orderId, exact(trade.orderStatus.filled))
            reads.add_details(details, trade.order, trade.contract)
            self._adopt(trade.order, trade.contract, exact(trade.orderStatus.filled))
        ended: dict[str, tuple[int, OrderStatus]] = {}
        # what this connection heard end (all a routine pass reads; a full one adds it to IB's answer: an order that
        # ended while IB answered is in neither that answer nor the working orders)
        done = [*done, *(t for t in self.ib.trades() if t.orderStatus.status in IBOrderStatus.DoneStates)]
        for trade in done:
            # IB's completedOrder carries neither client id nor order id (ib_async reads both as 0): the key in
            # orderRef says whose it is (the engine keeps only its own journal's), the id is ours if we know it
            ref = trade.order.orderRef
            if ref and ref.startswith("tg:") and ref not in working:
                known = self._orders.id_of(ref)
                order_id = trade.order.orderId if known is None else known
                ended[ref] = (order_id, ib_ended_status(trade.orderStatus.status))
                reads.add_details(details, trade.order, trade.contract)
        executions = []
        candidate, convert = self._candidate, self._book_execution
        for fill in self.ib.fills():
            ex = fill.execution
            if not ex.orderRef or not ex.orderRef.startswith("tg:"):
                continue
            event = reads.execution(fill, candidate, convert)
            if event is not None:
                executions.append(event)
                self._seen_execs.add(ex.execId)
        positions: dict[str, dict[str, Decimal]] = {}
        for pos in self.ib.positions():
            if pos.position:
                acct = positions.setdefault(pos.account, {})
                acct[pos.contract.symbol] = acct.get(pos.contract.symbol, ZERO) + exact(pos.position)
        mark = next(_marks)  # in the stream right where the book was read (nothing is awaited from here on)
        self._emit(BookMark(mark))
        return OrderBook(working, ended, executions, positions, self.default_account, complete, details, mark)

    async def _completed_orders(self) -> tuple[list[Trade], bool]:
        """IB's completed orders of the day, and whether they could be read.  One request at a time: ib_async keeps
        one result list per request kind, so a second request while the first's answer still arrives (it timed out
        here, not at IB) makes both fail - every late row a logged KeyError.  A later pass waits for it first."""
        timeout = self.cfg.request_timeout_s
        pending = self._completed_request
        try:
            if pending is not None and not pending.done() and self._completed_connection == self.state.reconnects:
                # still unanswered after a second wait: given up (IB dropped it), a new request goes out
                await asyncio.wait([pending], timeout=timeout)
            await self._paced(Lane.DATA, "completed orders")
            request = asyncio.ensure_future(self.ib.reqCompletedOrdersAsync(True))
            self._completed_request, self._completed_connection = request, self.state.reconnects
            return await asyncio.wait_for(asyncio.shield(request), timeout), True
        except (TimeoutError, ConnectionError, OSError) as exc:
            # without IB's completed orders an order that ended while we were away looks never sent: say so, so
            # that nothing is re-sent blind (the engine holds new entries and asks again)
            log.error("completed orders could not be read (%s): this order book is incomplete", exc or type(exc))
            return [], False

    def _book_execution(self, fill: Fill) -> FillEvent | None:
        """An execution at IB as the book's fill (adopted under its order), or None if it is foreign."""
        order_id = self._adopt_exec(fill)
        return None if order_id is None else fill_event(order_id, fill.execution.orderRef, fill, self.now_ns())

    def _adopt(self, order: Order, contract: Contract, filled: Decimal) -> None:
        if order.orderId not in self._orders:
            self._orders[order.orderId] = Placed(order.orderRef, contract.symbol, exact(order.totalQuantity),
                                                  order, contract, filled=filled, submitted=True)

    def _adopt_exec(self, fill: Fill) -> int | None:
        """The order id an execution at IB is adopted under, or None if it is foreign: it must match the order
        it names in every identifying field, or - an order not known yet - have been placed by this client id."""
        ex = fill.execution
        found = self._owner_of(fill)
        if found is None and (self._orders.get(ex.orderId) is not None or self._orders.id_of(ex.orderRef) is not None):
            return None  # it collides with an order of ours and does not match it: foreign (logged)
        if found is None:
            seen = Owner.of_fill(fill)
            if seen.client_id != self.client_id:
                self._foreign_exec(ex.execId, ex.orderRef, ex.orderId, seen, [
                    f"clientId {seen.client_id} != ours {self.client_id}"])
                return None
            qty = exact(ex.cumQty or ex.shares)
            order = Order(orderId=ex.orderId, orderRef=ex.orderRef, totalQuantity=qty, clientId=ex.clientId,
                          account=ex.acctNumber, action=seen.side, permId=ex.permId)
            placed = Placed(ex.orderRef, fill.contract.symbol, qty, order, fill.contract, owner=seen)
            self._orders[ex.orderId] = placed
            found = ex.orderId, placed
        if ex.execId not in self._seen_execs:
            found[1].filled += exact(ex.shares)
        return found[0]

