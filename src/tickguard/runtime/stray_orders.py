"""Orders of this journal that the broker holds and the journal does not: taken over, never sent again.

Why this exists although write-ahead (``outbox``) forbids sending an order before its commit: a crash cannot
be ruled out between a send and the commit that follows every fault (a bug that bypasses the outbox, a journal
restored from a backup older than the last commit, a person re-sending an order with the engine's key).  Then
the broker holds an exit the journal never recorded; the restarted engine, seeing the level crossed again,
would decide the same exit and send it a second time - double the position out.  So at start-up every order
whose ``orderRef`` carries this journal's id (``tg:<journal id>:<trade>:<leg>[:<n>]``) and that the journal
does not know is:

* **taken over** when its trade is one of this journal's live trades: journaled now as the order the broker
  holds (its quantity, side, type and limit from the broker's details, or from its executions), its leg counts
  it in flight and as fired, a stop or time leg closes the trade; its fills are then applied like any other's;
* **cancelled** (if still working) and reported UNRECONCILED when its trade is unknown or over: nothing of it
  is applied to any trade.

An order the journal holds for a trade that was over before this start is no stray (the broker's book of the day
lists every order of the day): recovery looks such keys up in the journal (``recovery.remember_orders_over``) and
they are left alone - unless one still works at the broker, which is cancelled and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import chain, filterfalse
from operator import attrgetter

from tickguard.adapters.broker import BrokerOrder, OrderBook
from tickguard.core.model import OrderIntent, OrderType, PriorityClass
from tickguard.core.money import ZERO
from tickguard.core.order_state import OrderStatus
from tickguard.core.trade_manager import TradeManager
from tickguard.runtime.order_executor import OrderExecutor, OrderRecord

log = logging.getLogger(__name__)
_REF = attrgetter("ref")


def take_over_strays(book: OrderBook, trades: TradeManager, executor: OrderExecutor, journal_id: str | None,
                     adopted: list[str], mismatches: list[str], cancel: Callable[[int], None] | None) -> None:
    """Take over (or cancel) every order of this journal at the broker that the journal does not hold.
    ``book`` is already reduced to this journal's keys (``recovery.ours_only``)."""
    if not journal_id:
        return
    # the keys the executor lacks, filtered in C as they are read: no set of the day's thousands of keys is built
    keys = set(filterfalse(executor.orders.__contains__, chain(book.working, book.ended, map(_REF, book.executions))))
    prefix = f"tg:{journal_id}:"
    taken: list[tuple[OrderIntent, int]] = []
    over = executor.journaled_over
    for key in sorted(k for k in keys if k.startswith(prefix)):
        if key in over:  # journaled, its trade over before this start: no stray, unless it still works there
            if key in book.working:
                _cancel_over(key, over[key], book, cancel, mismatches)
            continue
        parts = key.split(":")  # tg, journal id, trade id, leg[, n]
        trade = trades.trades.get(parts[2]) if len(parts) >= 4 else None
        order = _order_of(key, book)
        order_id = _order_id(key, book)
        if trade is None or not trade.state.automated or order is None:
            working = key in book.working
            if working and cancel is not None and order_id is not None:
                cancel(order_id)
            mismatches.append(f"{key}: an order of this journal at the broker that the journal does not hold, for a "
                              f"trade that is {'unknown' if trade is None else trade.state.value}; "
                              f"{'cancelled' if working else 'not applied'} - left for the user")
            continue
        leg = parts[3]
        fired = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else 1
        intent = OrderIntent(
            key=key, trade_id=trade.id, leg=leg, user=trade.request.user, account=order.account,
            symbol=order.symbol, action=order.action, qty=order.qty, order_type=order.order_type,
            limit_price=order.limit_price, created_ns=trade.created_ns,
            priority=PriorityClass.ENTRY if leg == "entry" else PriorityClass.EXIT_CRITICAL if leg in ("stop", "time")
            else PriorityClass.EXIT)
        executor.take_over(OrderRecord(intent, status=OrderStatus.SUBMITTED, attempts=1, order_id=order_id))
        taken.append((intent, fired))
        adopted.append(f"{key} (found at the broker, never journaled: taken over, not sent again)")
        log.error("order %s was at the broker but not in the journal (sent before its commit): taken over", key)
    if taken:  # all at once: a trade's orders are all counted before it closes
        trades.adopt_orders(taken)


def _cancel_over(key: str, status: OrderStatus, book: OrderBook, cancel: Callable[[int], None] | None,
                 mismatches: list[str]) -> None:
    """An order of a trade that was over before this start, still working at the broker: nothing manages it (it
    could fill and open a position no trade holds) - cancelled, and reported."""
    order_id = book.working[key][0]
    if cancel is not None and order_id:
        cancel(order_id)
    mismatches.append(f"{key}: working at the broker, an order of a trade that is over (journaled {status}); "
                      "cancelled - left for the user")


def _order_of(key: str, book: OrderBook) -> BrokerOrder | None:
    """The order as the broker holds it, or as its executions describe it (their total, at market)."""
    if key in book.details:
        return book.details[key]
    fills = [f for f in book.executions if f.ref == key]
    if not fills:
        return None
    qty = sum((f.qty for f in fills), ZERO)
    first = fills[0]
    return BrokerOrder(key, first.account, first.symbol, first.action, qty, OrderType.MARKET)


def _order_id(key: str, book: OrderBook) -> int | None:
    for source in (book.working, book.ended):
        if key in source and source[key][0]:
            return source[key][0]
    return next((f.order_id for f in book.executions if f.ref == key), None)
