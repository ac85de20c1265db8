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

from tickguard.adapters.broker import BookMark, BrokerOrder, FillEvent, KnownToEngine, OrderBook
from tickguard.adapters.ib.attribution import AttributionMixin, Owner, Placed, PlacedOrders
from tickguard.adapters.ib.book_changes import BookChanges
from tickguard.adapters.ib.book_reads import BookReads
from tickguard.adapters.ib.order_status import ib_ended_status
from tickguard.adapters.ib.values import fill_event
from tickguard.config import IBConfig
from tickguard.core.money import ZERO, exact
from tickguard.core.order_state import OrderStatus
from tickguard.core.throttle import Lane

log = logging.getLogger(__name__)
_marks = itertools.count(1)  # BookMark tokens
BOOK_SLICE = 500  # ended orders or executions looked up between two turns of the event loop (~1-2 ms)
BOOK_ATTEMPTS = 4  # reads that start over when something changed part-way; the last one gives no turn


class _Looked:
    """What one read of the book has looked at so far, and the moment it began."""

    __slots__ = ("connection", "execs", "known", "orders", "state", "unknown")

    def __init__(self, unknown: int, connection: int, wrapper: Any = None, known: KnownToEngine | None = None) -> None:
        self.unknown, self.connection = unknown, connection
        self.known = known  # what the engine holds already: left out of the book (looked at all the same)
        self.orders: set[int] = set()  # order ids and perm ids
        self.execs: set[str] = set()
        # ib_async's containers: a reset (the socket dropped) replaces them
        self.state = () if wrapper is None else (wrapper.trades, wrapper.fills, wrapper.positions)

    def same_state(self, wrapper: Any) -> bool:
        return all(a is b for a, b in zip(self.state, (wrapper.trades, wrapper.fills, wrapper.positions),
                                          strict=True))

    def ids(self, order_id: int, perm_id: int) -> None:
        if order_id > 0:
            self.orders.add(order_id)
        if perm_id > 0:
            self.orders.add(perm_id)


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
    _book_changes: BookChanges  # IB's messages that may change what the book reads (book_changes.py)
    _can_send: Callable[[], bool]  # connected, synced and reconciled (ib_client.py)
    state: Any  # ConnectionState: its reconnect count tells one connection's requests from the next's
    _completed_request: asyncio.Future[list[Trade]] | None = None
    _completed_connection = -1

    async def order_book(self, full: bool = True, known: KnownToEngine | None = None) -> OrderBook:
        """IB's view for journal recovery: this client's working orders, completed orders and the day's
        executions (by orderRef), and positions.  Orders found here are adopted so their events route.

        ``full``: ask IB for the day's completed orders (a start, a reconnect, an order past its acknowledgement
        deadline).  Without it the ended orders are the ones this connection heard end: IB's answer grows with
        every order of the day (5,000 orders: a quarter-second read that holds the event loop), and on a live
        connection it holds nothing the order statuses did not already say - so routine passes skip it.

        The rest is read as of one instant, after IB's answer, and marked in the event stream (``BookMark``): the
        book then holds exactly what the events before the mark said, whatever arrived while IB answered.  The
        day's orders and executions are looked at in slices with a turn of the event loop between them (ticks do
        not wait for a 5,000-order read); the read starts over if something it already looked at changed meanwhile
        (book_changes.py), and takes what appeared meanwhile in its last part.  The last of ``BOOK_ATTEMPTS`` gives
        no turn.

        ``known``: executions the engine applied and ended orders it holds final are left out of the book as they
        are looked at, in the slices (``KnownToEngine``): the engine's pass then sees only what may be news."""
        done: list[Trade] = []
        complete = True
        if full:
            done, complete = await self._completed_orders()
        self._book_changes.begin()
        try:
            for attempt in range(BOOK_ATTEMPTS):
                book = await self._read_book(done, complete, sliced=attempt < BOOK_ATTEMPTS - 1, known=known)
                if book is not None:
                    return book
        finally:
            self._book_changes.end()
        raise AssertionError("the last attempt reads the book without yielding")  # pragma: no cover

    async def _read_book(self, completed: list[Trade], complete: bool, sliced: bool,
                         known: KnownToEngine | None = None) -> OrderBook | None:
        """One read of the book; ``sliced``: give the event loop a turn every ``BOOK_SLICE`` orders or executions
        (None: something already looked at changed meanwhile - read again).  Adopting working orders and
        converting executions not converted before (they change the adapter's own records) are left to the last
        part, which gives no turn and marks the book."""
        self._book_reads.start(self.state.reconnects)  # a new connection's objects are all new
        read = _Looked(self._book_changes.unknown, self.state.reconnects, self.ib.wrapper, known)
        trades = self.ib.trades()
        ended: dict[str, tuple[int, OrderStatus]] = {}
        details: dict[str, BrokerOrder] = {}
        own: list[Trade] = []
        for n, trade in enumerate((*completed, *trades), 1):
            self._look_at(trade, n <= len(completed), ended, details, own, read)
            if sliced and n % BOOK_SLICE == 0 and not await self._still(read):
                return None
        fills = self.ib.fills()
        looked: list[Fill] = []
        events: list[FillEvent | None] = []
        unconverted: list[int] = []
        for n, fill in enumerate(fills, 1):
            ex = fill.execution
            if ex.orderRef.startswith("tg:") and self._looked_at(ex, read):
                hit, event = self._book_reads.kept_execution(fill, self._candidate)
                if not hit:
                    unconverted.append(len(looked))
                looked.append(fill)
                events.append(event)
            if sliced and n % BOOK_SLICE == 0 and not await self._still(read):
                return None
        if sliced and not await self._still(read):
            return None
        # from here on nothing is awaited.  What appeared meanwhile (ib_async only ever adds, at the end): orders
        # placed or reported, and executions
        for trade in list(self.ib.wrapper.trades.values())[len(trades):]:
            self._look_at(trade, False, ended, details, own, read)
        for fill in list(self.ib.wrapper.fills.values())[len(fills):]:
            if fill.execution.orderRef.startswith("tg:") and (known is None or fill.execution.execId
                                                               not in known.executions):
                unconverted.append(len(looked))
                looked.append(fill)
                events.append(None)
        return self._book_now(own, looked, events, unconverted,
                              OrderBook({}, ended, [], {}, self.default_account, complete, details))

    def _look_at(self, trade: Trade, completed: bool, ended: dict[str, tuple[int, OrderStatus]],
                 details: dict[str, BrokerOrder], own: list[Trade], read: _Looked) -> None:
        """One of ib_async's orders: an ended one of a tickguard key into ``ended`` (IB's completed orders all are),
        an open one of this client id into ``own``; either noted as looked at."""
        order = trade.order
        if completed or trade.orderStatus.status in IBOrderStatus.DoneStates:
            ref = order.orderRef
            if ref and ref.startswith("tg:"):
                read.ids(order.orderId, order.permId)
                if read.known is not None and read.known.ended(ref):
                    return  # the engine holds it final: nothing a pass would do with it
                known = self._orders.id_of(ref)
                ended[ref] = (order.orderId if known is None else known, ib_ended_status(trade.orderStatus.status))
                self._book_reads.add_details(details, order, trade.contract)
        else:
            if order.clientId == self.client_id:  # a master client sees every other client's too
                own.append(trade)
            elif not order.orderRef.startswith("tg:"):
                return  # never in the book, open or ended
            read.ids(order.orderId, order.permId)  # it may end while the read goes on: then it is in ``ended``

    @staticmethod
    def _looked_at(ex: Any, read: _Looked) -> bool:
        """Note one of this journal's executions as looked at; is it for the book (not one the engine applied)?"""
        read.ids(ex.orderId, ex.permId)
        read.execs.add(ex.execId)
        return read.known is None or ex.execId not in read.known.executions

    def _book_now(self, own: list[Trade], fills: list[Fill], events: list[FillEvent | None], unconverted: list[int],
                  book: OrderBook) -> OrderBook:
        """The read's last part, with no turn of the event loop: the working orders (a key working now is not
        ended: re-sent after its first order ended), adopted; the executions not converted before, converted; the
        positions; the mark in the event stream."""
        reads = self._book_reads
        adopted = len(self._orders)
        # an own order the client ended meanwhile, with no message from IB (ib_async ends an order not transmitted
        # yet at once when it is cancelled): ended, unless its key works under another order
        ended_now: list[Trade] = []
        for trade in own:
            if trade.orderStatus.status in IBOrderStatus.DoneStates:
                ended_now.append(trade)
                continue
            ref = trade.order.orderRef
            if not ref:
                continue
            book.working[ref] = (trade.order.orderId, exact(trade.orderStatus.filled))
            book.ended.pop(ref, None)
            book.details.pop(ref, None)
            reads.add_details(book.details, trade.order, trade.contract)
            self._adopt(trade.order, trade.contract, exact(trade.orderStatus.filled))
        for trade in ended_now:
            if trade.order.orderRef not in book.working:
                self._look_at(trade, False, book.ended, book.details, [], _Looked(0, 0))
        if len(self._orders) != adopted:  # an order newly known: every execution's attribution may change
            unconverted = list(range(len(fills)))
        for i in unconverted:
            fill = fills[i]
            events[i] = event = reads.execution(fill, self._candidate, self._book_execution)
            if event is not None:
                self._seen_execs.add(fill.execution.execId)  # a kept one's was added when it was converted
        book.executions = [e for e in events if e is not None]
        for pos in self.ib.positions():
            if pos.position:
                acct = book.positions.setdefault(pos.account, {})
                acct[pos.contract.symbol] = acct.get(pos.contract.symbol, ZERO) + exact(pos.position)
        if not self._can_send():  # read while disconnected (ib_async's state emptied, or stale): no conclusions
            book.complete = False
        book.mark = next(_marks)  # in the stream right where the book was read (nothing is awaited from here on)
        self._emit(BookMark(book.mark))
        return book

    async def _still(self, read: _Looked) -> bool:
        """Give the event loop a turn; then, is what the read looked at so far unchanged?  (What was named during
        an earlier turn and looked at after it was read as it is now: only this turn's names count.)  A dropped
        socket empties ib_async's state without a message (``wrapper.reset`` makes new dicts): that counts too."""
        changes = self._book_changes
        since = len(changes.named)
        await asyncio.sleep(0)
        if (changes.unknown != read.unknown or self.state.reconnects != read.connection
                or not read.same_state(self.ib.wrapper)):
            return False
        return all(read.orders.isdisjoint(ids) and exec_id not in read.execs for ids, exec_id in changes.named[since:])

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

