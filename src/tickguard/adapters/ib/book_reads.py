"""The order book's conversions of ib_async's orders and executions, kept from one reconciliation pass to the next.

Why: every pass reads every order and execution of the day (``RecoveryMixin.order_book``), and converting one -
checking that an execution is this client's (``attribution.py``), making the engine's fill and order from IB's
floats - is most of the read.  With 5,000 filled entries that was a 70 ms hold of the event loop on every routine
pass (every 30 s by default): the quotes that arrived meanwhile waited, the longest exits of
``bench/wire_to_wire.py``.  An order or an execution that has not changed converts to what it converted to last
time, so each is converted once and looked up afterwards.  What "not changed" means is checked on every pass -
the same ib_async object, and every field the conversion reads (for an execution: the order it was attributed to,
that order's owner record, the commission report) - so a book is exactly what converting everything again would
give (tests/adapters/ib/test_book_reads.py compares the two).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ib_async import Contract, Order
from ib_async.objects import Fill

from tickguard.adapters.broker import BrokerOrder, FillEvent
from tickguard.adapters.ib.attribution import Placed
from tickguard.core.model import Action, OrderType
from tickguard.core.money import decimal_of, exact


def order_details(order: Order, contract: Contract) -> BrokerOrder | None:
    """The order as IB holds it, in the engine's terms (a market or limit order of a tickguard key only)."""
    if order.orderRef.startswith("tg:") and order.orderType in ("MKT", "LMT") and order.action in ("BUY", "SELL"):
        limit = decimal_of(order.lmtPrice) if order.orderType == "LMT" else None
        return BrokerOrder(order.orderRef, order.account, contract.symbol, Action(order.action),
                           exact(order.totalQuantity), OrderType(order.orderType), limit)
    return None


class BookReads:
    """Conversions kept per ib_async object, valid for one connection (``connection``: its reconnect count)."""

    def __init__(self) -> None:
        self.connection = -1
        self._orders: dict[int, tuple[Order, tuple[Any, ...], BrokerOrder | None]] = {}
        self._fills: dict[str, tuple[Any, ...]] = {}

    def start(self, connection: int) -> None:
        """Before a pass: a new connection's ib_async objects are all new (ib_async resets its state on connect),
        so what was kept for the last one is dropped rather than kept alive."""
        if connection != self.connection:
            self.connection = connection
            self._orders.clear()
            self._fills.clear()

    def add_details(self, details: dict[str, BrokerOrder], order: Order, contract: Contract) -> None:
        converted = self.details(order, contract)
        if converted is not None:
            details[order.orderRef] = converted

    def details(self, order: Order, contract: Contract) -> BrokerOrder | None:
        """``order_details``, kept.  Also called as an order ends (the adapter's status handler), so that a pass
        after thousands of orders ended does not convert them all at once: it finds them converted."""
        fields = (order.orderRef, order.orderType, order.action, order.lmtPrice, order.totalQuantity, order.account,
                  contract.symbol)
        kept = self._orders.get(id(order))
        if kept is None or kept[0] is not order or kept[1] != fields:
            kept = self._orders[id(order)] = (order, fields, order_details(order, contract))
        return kept[2]

    def execution(self, fill: Fill, candidate: Callable[[int, str], tuple[int, Placed] | None],
                  convert: Callable[[Fill], FillEvent | None]) -> FillEvent | None:
        """``fill`` as the engine's fill, or None if it is not this client's: ``convert(fill)`` the first time and
        whenever what it depends on changed - ``candidate(order id, orderRef)`` is the placed order it would be
        checked against.  Also called as an execution's commission arrives (its last part), for the same reason
        as ``details``."""
        hit, event = self.kept_execution(fill, candidate)
        if hit:
            return event
        ex = fill.execution
        report = fill.commissionReport
        event = convert(fill)
        found = candidate(ex.orderId, ex.orderRef)  # the conversion may adopt its order, or complete the owner
        self._fills[ex.execId] = (fill, _state(found), report.execId, report.commission, event)
        return event

    def kept_execution(self, fill: Fill, candidate: Callable[[int, str], tuple[int, Placed] | None]
                       ) -> tuple[bool, FillEvent | None]:
        """``(True, what execution gives)`` when the kept conversion of ``fill`` is still valid, else ``(False,
        None)`` - without converting: a conversion may adopt orders (attribution), which a read that yields to the
        event loop part-way leaves to its last, uninterrupted part (``RecoveryMixin.order_book``)."""
        report = fill.commissionReport
        ex = fill.execution
        kept = self._fills.get(ex.execId)
        if (kept is not None and kept[0] is fill and _same(kept[1], candidate(ex.orderId, ex.orderRef))
                and kept[2] == report.execId and kept[3] == report.commission):
            return True, kept[4]
        return False, None


def _state(found: tuple[int, Placed] | None) -> tuple[Any, ...] | None:
    return None if found is None else (found[0], found[1], found[1].owner)


def _same(kept: tuple[Any, ...] | None, found: tuple[int, Placed] | None) -> bool:
    if kept is None or found is None:
        return kept is None and found is None
    return kept[0] == found[0] and kept[1] is found[1] and kept[2] is found[1].owner
