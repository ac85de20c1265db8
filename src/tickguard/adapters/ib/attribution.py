"""Whose is an order report or an execution?  Attribution by every identifying field, never by order id alone.

IB numbers orders per API client (another client's order can carry the same ``orderId``), ``orderRef`` is free
text IB does not make unique, and a master API client - or a gateway that answers ``reqExecutions`` with every
client's executions - hands a client executions that are not its own.  So an execution or an order report
belongs to an order this connection placed (or adopted) only if **orderRef, client id, account, contract (conId)
and side** all match, and the permId too once both sides know it (IB-wide, so the strongest check).  Anything
else is *foreign*: never applied, logged at WARNING with the evidence once per execution (or order), counted.

``Owner`` is what identifies one order; ``mismatches`` (pure) names every field that differs.  ``AttributionMixin``
applies the rule for ``IBBroker``: the live ``execDetails``, ``ib.fills()`` after a reconnect, the recovery's
``order_book`` and order statuses all go through it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from decimal import Decimal

from ib_async import IB, Contract, Order, Trade
from ib_async.objects import Fill

from tickguard.core.money import ZERO

log = logging.getLogger(__name__)

SIDES = {"BOT": "BUY", "SLD": "SELL", "BUY": "BUY", "SELL": "SELL"}


@dataclass(frozen=True, slots=True)
class Owner:
    """What identifies an order: its key, the API client that placed it, account, contract, side, permId (0: not
    known yet).  ``side`` is BUY or SELL (an execution's BOT / SLD are mapped)."""

    ref: str
    client_id: int
    account: str
    con_id: int
    side: str
    perm_id: int = 0

    @classmethod
    def of_order(cls, order: Order, contract: Contract) -> Owner:
        return cls(order.orderRef or "", order.clientId, order.account or "", contract.conId,
                   SIDES.get((order.action or "").upper(), order.action or ""), order.permId or 0)

    @classmethod
    def of_fill(cls, fill: Fill) -> Owner:
        ex = fill.execution
        return cls(ex.orderRef or "", ex.clientId, ex.acctNumber or "", fill.contract.conId,
                   SIDES.get((ex.side or "").upper(), ex.side or ""), ex.permId or 0)


def mismatches(ours: Owner, seen: Owner) -> list[str]:
    """Every identifying field in which ``seen`` differs from ``ours`` (empty: it is ours).  Equality decides; the
    permId is compared only when both are known (non-zero)."""
    out = [f"{name} {getattr(seen, attr)!r} != ours {getattr(ours, attr)!r}"
           for name, attr in (("orderRef", "ref"), ("clientId", "client_id"), ("account", "account"),
                              ("conId", "con_id"), ("side", "side"))
           if getattr(seen, attr) != getattr(ours, attr)]
    if ours.perm_id and seen.perm_id and ours.perm_id != seen.perm_id:
        out.append(f"permId {seen.perm_id} != ours {ours.perm_id}")
    return out


@dataclass(slots=True)
class Placed:
    """One order of this connection (placed or adopted), as the adapter tracks it (``final``: its end was
    reported, or it filled; ``owner``: what its reports must match, from the order unless given)."""

    ref: str
    symbol: str
    qty: Decimal
    order: Order
    contract: Contract
    filled: Decimal = ZERO
    final: bool = False
    submitted: bool = False
    owner: Owner = None  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.owner is None:
            self.owner = Owner.of_order(self.order, self.contract)


class PlacedOrders(dict[int, Placed]):
    """This connection's orders by order id, with an index by orderRef kept beside it.

    Why: recovery's order book and attribution look orders up by their key (a completed order carries no order id,
    an execution's id may not be ours).  A scan of every order per lookup made a reconciliation pass quadratic in
    the day's orders: 1.5 s of a held event loop at 5,000 trades (bench/wire_to_wire.py).  Orders are only ever
    added or replaced, never removed, so the index is kept by ``__setitem__`` alone.  One key can have several
    order ids (an order re-sent under its key after a pacing refusal): ``id_of`` gives the first, as the scan did."""

    def __init__(self) -> None:
        super().__init__()
        self._by_ref: dict[str, int] = {}

    def __setitem__(self, order_id: int, placed: Placed) -> None:
        super().__setitem__(order_id, placed)
        if placed.ref:
            self._by_ref.setdefault(placed.ref, order_id)

    def id_of(self, ref: str) -> int | None:
        """The (first) order id placed or adopted under ``ref``, or None."""
        if not ref:
            return None
        order_id = self._by_ref.get(ref)
        if order_id is not None and self[order_id].ref != ref:  # its id was taken over by another order: look
            order_id = next((oid for oid, p in self.items() if p.ref == ref), None)
            if order_id is None:
                del self._by_ref[ref]
            else:
                self._by_ref[ref] = order_id
        return order_id


class AttributionMixin:
    """The rule applied for ``IBBroker``: which placed order an execution or an order report belongs to."""

    ib: IB
    _orders: PlacedOrders
    foreign_executions: int = 0  # executions refused as another client's / account's / contract's / side's
    foreign_statuses: int = 0  # order reports (openOrder / orderStatus) of an order that is not ours

    @property
    def client_id(self) -> int:
        """This connection's API client id (ib_async sets it on connect)."""
        return self.ib.client.clientId

    def _owner_of(self, fill: Fill) -> tuple[int, Placed] | None:
        """The placed order ``fill`` belongs to, or None.  One that collides with an order of ours (same order id
        or same orderRef) but differs in any identifying field is foreign: logged once per execId and counted."""
        ex = fill.execution
        found = self._candidate(ex.orderId, ex.orderRef)
        if found is None:
            return None
        order_id, placed = found
        seen = Owner.of_fill(fill)
        why = mismatches(placed.owner, seen)
        if why:
            self._foreign_exec(ex.execId, placed.ref, order_id, seen, why)
            return None
        if not placed.owner.perm_id and seen.perm_id:
            placed.owner = replace(placed.owner, perm_id=seen.perm_id)
        return found

    def _candidate(self, order_id: int, ref: str) -> tuple[int, Placed] | None:
        placed = self._orders.get(order_id)
        if placed is not None and placed.ref == ref:
            return order_id, placed
        by_ref = self._orders.id_of(ref)
        if by_ref is not None:
            return by_ref, self._orders[by_ref]
        return None if placed is None else (order_id, placed)

    def _foreign_exec(self, exec_id: str, ref: str, order_id: int, seen: Owner, why: list[str]) -> None:
        foreign: set[str] = self.__dict__.setdefault("_foreign_execs", set())
        if exec_id in foreign:
            return
        foreign.add(exec_id)
        self.foreign_executions += 1
        log.warning("foreign execution %s not applied to %s (order id %s): %s; it says %s", exec_id, ref,
                    order_id, "; ".join(why), seen)

    def _own_report(self, trade: Trade, placed: Placed) -> bool:
        """Is this openOrder / orderStatus about ``placed``?  Another client's order under the same order id
        (a master client sees them) is foreign: logged once per (clientId, orderId, permId), counted."""
        seen = Owner.of_order(trade.order, trade.contract)
        why = mismatches(placed.owner, seen)
        if not why:
            if not placed.owner.perm_id and seen.perm_id:
                placed.owner = replace(placed.owner, perm_id=seen.perm_id)
            return True
        foreign: set[tuple[int, int, int]] = self.__dict__.setdefault("_foreign_orders", set())
        key = (seen.client_id, trade.order.orderId, seen.perm_id)
        if key not in foreign:
            foreign.add(key)
            self.foreign_statuses += 1
            log.warning("foreign order report (order id %s) not applied to %s: %s; it says %s",
                        trade.order.orderId, placed.ref, "; ".join(why), seen)
        return False

    def _own_trades(self) -> list[Trade]:
        """ib_async's open trades placed by this client id (a master client also sees every other client's)."""
        return [t for t in self.ib.openTrades() if t.order.clientId == self.client_id]
