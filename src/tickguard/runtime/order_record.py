"""An order as the executor tracks it (``OrderRecord``), and the two sides the executor talks to: the broker it
sends to (``OrderSink``) and the trade manager it reports to (``IntentListener``).  A module of its own so the
executor module holds the behaviour and this one the shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from tickguard.adapters.broker import BrokerOrder
from tickguard.core.halts import Execution, Overfill
from tickguard.core.model import OrderIntent
from tickguard.core.money import ZERO, ratio
from tickguard.core.order_state import OrderStatus


def holds_elsewhere(placed_through: str, session: str) -> bool:
    """Whether an order placed through ``placed_through`` may be working where this broker session (``session``)
    cannot see it: IB shows a client only its own open orders and executions (reqOpenOrders, reqExecutions), so an
    order placed through another client id - or another gateway - is absent from this one's book whether it works
    or never arrived.  Re-sending it would make two live orders with one orderRef.  Not known on either side (a
    row from before 0009, the simulator): no guard, as before."""
    return bool(placed_through) and bool(session) and placed_through != session


class DuplicateIntent(RuntimeError):
    """An intent whose idempotency key was already submitted."""


class OrderSink(Protocol):
    def place_order(self, order: BrokerOrder) -> int: ...

    def cancel_order(self, order_id: int) -> None: ...


class IntentListener(Protocol):
    def on_fill(self, intent: OrderIntent, qty: Decimal, price: Decimal, ts_ns: int, commission: Decimal,
                execution: Execution | None = None) -> Overfill | None: ...

    def on_intent_closed(self, intent: OrderIntent, status: OrderStatus, remaining: Decimal, reason: str) -> None: ...

    def on_commission(self, intent: OrderIntent, commission: Decimal) -> None: ...


@dataclass(slots=True)
class OrderRecord:
    intent: OrderIntent
    status: OrderStatus = OrderStatus.NEW
    attempts: int = 0
    order_id: int | None = None
    filled: Decimal = ZERO
    notional: Decimal = ZERO  # sum of fill price x qty, exact
    commission: Decimal = ZERO
    reason: str = ""
    cancel_requested: bool = False
    held: int = 0  # times it could not go out because the connection was down (not attempts)
    exec_ids: set[str] = field(default_factory=set)
    commissions: dict[str, Decimal] = field(default_factory=dict)  # exec id -> its commission, counted once
    held_commissions: dict[str, Decimal] = field(default_factory=dict)  # arrived before their execution
    events: list[dict[str, Any]] = field(default_factory=list)
    decided_ns: int | None = None  # wall clock of the decision that made it, until it is sent (metrics)
    placed_through: str = ""  # the broker session it went out through ("": not known - journaled before 0009)

    @property
    def final(self) -> bool:
        return self.status.is_final

    @property
    def avg_price(self) -> Decimal:
        """Average fill price (zero before the first fill), from the exact sums."""
        return ratio(self.notional, self.filled) if self.filled else ZERO
