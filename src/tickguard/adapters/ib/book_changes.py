"""What changed in ib_async's orders and executions while the order book was read, so a read may yield part-way.

Why: a reconciliation pass reads every order and execution of the day from ib_async's objects; at 5,000 orders that
was a 25-35 ms hold of the event loop every 30 s, and a stop crossed meanwhile waited for it (the longest exits of
``bench/wire_to_wire.py``).  The read now gives the loop a turn every few hundred objects (``RecoveryMixin.
order_book``), which is exact only if what it already read did not change before it was done.

ib_async changes those objects only while it decodes a message from IB - or when the client cancels an order
(only an open one, whose state the read takes in its last part, ended or not), places one (a new object, which it
also takes there), or loses its socket (``reset``: new containers, which the read checks for itself).  So the
messages are sorted three ways, once, by wrapping ib_async's decoder and wrapper:

* market data, history, contract details, account values, positions (read in the read's last part), the time and
  the ends of answers: change nothing the read looks at - a tick pays nothing for this;
* order statuses, open orders, executions, commission reports, errors (ib_async cancels orders on some) and
  completed orders: the order ids, perm ids and execution ids they name are noted while a read is under way
  (``named``), and a read starts over only if it already looked at one of them - the exits of a busy market do not
  stop it;
* anything else: counted in ``unknown``, and a read under way starts over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ib_async import IB

# TWS message ids (ib_async's decoder.py) that cannot change an order or an execution ib_async holds: tickPrice,
# tickSize, market depth (12, 13), tickOptionComputation, tickGeneric, tickString, tickEFP, currentTime,
# tickSnapshotEnd, marketDataType, tickReqParams, tickNews, tickByTick; contract details (10, 18, 52), history
# (17, 90, 96-98, 88, 106); account values and portfolio (6, 7, 8, 54, 63, 64, 73, 74), positions (61, 62, 71,
# 72), PnL (94, 95), managed accounts (15), next valid id (9), news bulletins (14); the ends of open orders,
# executions and completed orders (53, 55, 102) and orderBound (100)
QUIET = frozenset({1, 2, 12, 13, 21, 45, 46, 47, 49, 57, 58, 81, 84, 99, 10, 18, 52, 17, 90, 96, 97, 98, 88, 106,
                   6, 7, 8, 54, 63, 64, 73, 74, 61, 62, 71, 72, 94, 95, 15, 9, 14, 53, 55, 102, 100})
# order status, error, open order, execution, commission report, completed order: their wrapper methods note ids
NAMED = frozenset({3, 4, 5, 11, 59, 101})


class BookChanges:
    """Installed once per ib_async client (its decoder and wrapper live over reconnects)."""

    def __init__(self, ib: IB) -> None:
        self.unknown = 0
        # what was named while a read is under way, in order: (order and perm ids, execution id or None); each read
        # remembers where its turn began, so reads that overlap do not clear each other's; emptied when none reads
        self.named: list[tuple[tuple[int, ...], str | None]] = []
        self.readers = 0
        handlers: dict[int, Callable[[Any], None]] = ib.client.decoder.handlers
        for msg_id, handler in list(handlers.items()):
            if msg_id not in QUIET and msg_id not in NAMED:
                handlers[msg_id] = self._counted(handler)
        w = ib.wrapper
        note = self._note
        self._wrap(w, "orderStatus", lambda orderId, *a, **k: note((orderId, a[4] if len(a) > 4 else 0)))
        self._wrap(w, "openOrder", lambda orderId, contract, order, *a, **k: note((orderId, order.permId)))
        self._wrap(w, "completedOrder", lambda contract, order, *a, **k: note((order.orderId, order.permId)))
        self._wrap(w, "execDetails", lambda reqId, contract, ex, *a, **k: note((ex.orderId, ex.permId), ex.execId))
        self._wrap(w, "commissionReport", lambda report, *a, **k: note((), report.execId))
        self._wrap(w, "error", lambda reqId, *a, **k: note((reqId,)))

    def begin(self) -> None:
        self.readers += 1

    def end(self) -> None:
        self.readers -= 1
        if not self.readers:
            self.named.clear()

    def _note(self, ids: tuple[int, ...], exec_id: str | None = None) -> None:
        if self.readers:
            self.named.append((ids, exec_id))

    def _counted(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def counted(fields: Any) -> None:
            self.unknown += 1  # before: a handler that raises (ib_async logs it) may have changed something
            handler(fields)

        return counted

    def _wrap(self, wrapper: Any, name: str, note: Callable[..., None]) -> None:
        method = getattr(wrapper, name)

        def noted(*args: Any, **kwargs: Any) -> Any:
            try:  # before the method: it may raise half-way (the decoder logs it)
                note(*args, **kwargs)
            except Exception:  # arguments not as expected: whatever it changes is unknown - never lost
                self.unknown += 1
            return method(*args, **kwargs)

        setattr(wrapper, name, noted)
