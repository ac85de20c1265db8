"""The ``Broker`` protocol: what the engine needs from a market and an exchange, and the events it hears.

Two implementations sit behind it: ``sim`` (an embedded simulated market) and ``ib_client`` (ib_async).
Outcomes of orders come back as events from ``next_events`` rather than as return values, because at a
real broker they arrive later, in pieces, and sometimes after a reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from tickguard.core.model import Action, Bar, OrderType, Tick
from tickguard.core.money import exact
from tickguard.core.order_state import OrderStatus

__all__ = [
    "Broker", "BrokerError", "BrokerEvent", "BrokerOrder", "CommissionEvent", "ContractInfo", "FillEvent",
    "NoticeEvent", "OrderBook", "OrderStatus", "OrderStatusEvent", "UnknownSymbol", "WhatIf",
]


def _exact_fields(event: object, names: tuple[str, ...]) -> None:
    """Quantities and money cross into the engine as exact decimals, whatever number type the broker used
    (IB sends decimals, the simulated exchange counts in doubles): converted here, once (see core.money)."""
    for name in names:
        value = getattr(event, name)
        if value is not None and not isinstance(value, Decimal):
            object.__setattr__(event, name, exact(value))


class BrokerError(RuntimeError):
    """A broker-side failure the engine must report (connection, unknown symbol, ...)."""


class UnknownSymbol(BrokerError):
    pass


class NotConnected(BrokerError):
    """The broker connection is down: nothing was sent.  Not a rejection - the same order (or cancel) is to
    be sent once the connection is back and reconciled."""


@dataclass(slots=True, frozen=True)
class ContractInfo:
    symbol: str
    con_id: int
    exchange: str
    currency: str
    min_tick: float
    lot_size: Decimal

    def __post_init__(self) -> None:
        _exact_fields(self, ('lot_size',))


@dataclass(slots=True, frozen=True)
class BrokerOrder:
    ref: str  # the idempotency key, carried in IB's orderRef
    account: str
    symbol: str
    action: Action
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None = None  # exact, on the instrument's grid; an adapter writes it as it must

    def __post_init__(self) -> None:
        _exact_fields(self, ('qty', 'limit_price'))


@dataclass(slots=True, frozen=True)
class OrderStatusEvent:
    """What the broker says of one order, as a state of ``core.order_state``.  Adapters report ``submitted``
    (acknowledged; ``partially_filled`` is read the same way), ``filled``, ``cancelling``, ``cancelled`` and
    ``rejected``; the executor decides what the report means for its record (see ``OrderExecutor.on_status``).
    ``code`` is the broker's error code, if any."""

    order_id: int
    ref: str
    status: OrderStatus
    filled: Decimal
    remaining: Decimal
    ts_ns: int
    reason: str = ""
    code: int | None = None

    def __post_init__(self) -> None:
        _exact_fields(self, ('filled', 'remaining'))


@dataclass(slots=True, frozen=True)
class FillEvent:
    order_id: int
    ref: str
    exec_id: str
    account: str
    symbol: str
    action: Action
    qty: Decimal
    price: Decimal
    ts_ns: int
    commission: Decimal | None = None

    def __post_init__(self) -> None:
        _exact_fields(self, ('qty', 'price', 'commission'))


@dataclass(slots=True, frozen=True)
class CommissionEvent:
    """IB reports commissions after the execution, in a message of their own."""

    order_id: int
    exec_id: str
    commission: Decimal
    ts_ns: int

    def __post_init__(self) -> None:
        _exact_fields(self, ('commission',))


@dataclass(slots=True, frozen=True)
class NoticeEvent:
    """A broker message that is not about one order: connectivity, data farms, pacing.  ``level``: how loud the
    engine logs it (the adapter knows what the code means: a farm that is OK is INFO, a lost connection ERROR)."""

    code: int
    message: str
    ts_ns: int
    level: int = logging.WARNING


@dataclass(slots=True, frozen=True)
class BookMark:
    """Where in the event stream an order book was read (IB): it reflects every event before this mark and none
    after.  The engine applies the book here - not before events the adapter had queued but the engine not yet
    seen (a late "submitted" would follow the fill the book already showed: refused as going backwards, and
    each execution applied by the reconciliation would then arrive again as a replay)."""

    token: int


@dataclass(slots=True, frozen=True)
class WhatIf:
    """IB's what-if answer: what the order would do to margin, and whether it would be accepted."""

    accepted: bool
    init_margin_change: float
    maint_margin_change: float
    commission: float
    warning: str
    ts_ns: int


@dataclass(slots=True, frozen=True)
class KnownToEngine:
    """What a running engine holds already, which its routine reconciliation passes need not be told again
    (``Broker.order_book(known=...)``): the executions it has applied (by exec id) and the orders it holds in a
    final state (by key).

    Why: the broker's book holds every order and execution of the day, and a pass inside an engine step that
    touched each of them held the event loop ~11 ms at 5,000 trades (memory cold: ~1 us an entry) - the longest
    exits of ``bench/wire_to_wire.py`` at 10,000 quotes/s were the crossings that came while it ran.  The adapter
    already looks at each entry while it reads the book, in slices with turns of the event loop between them; there
    it leaves these out, and the pass sees only what may be news.

    Exact, not a sample: a pass does nothing with an execution the engine applied (applied once, by exec id) or an
    ended order the engine holds final (a final state never changes; strays are keys the engine lacks, and every
    difference a pass reports is about an order the engine holds open).  Both only grow while the engine runs, so
    what was left out at the read is still known at the pass.  Recovery at start-up passes nothing: it needs all."""

    executions: Container[str]
    ended: Callable[[str], bool]


@dataclass(slots=True)
class OrderBook:
    """What the broker knows, for reconciliation: working orders by idempotency key, orders that ended
    (cancelled / rejected / filled) by key, every execution of the day, and positions per account."""

    working: dict[str, tuple[int, Decimal]]  # key -> (broker order id, filled so far)
    ended: dict[str, tuple[int, OrderStatus]]  # key -> (broker order id, filled | cancelled | rejected)
    executions: list[FillEvent]
    positions: dict[str, dict[str, Decimal]]
    default_account: str = ""  # where an order with no account went (the connection's account): its positions' key
    # False when a part could not be fetched (IB: completed orders): the engine then draws no conclusion from an
    # order's absence - nothing is re-sent or reported on it, new entries wait, and it asks again soon
    complete: bool = True
    # key -> the order as the broker holds it (working or ended), where known: an order of ours the journal never
    # recorded is taken over from these details (runtime/stray_orders.py)
    details: dict[str, BrokerOrder] = field(default_factory=dict)
    # the ``BookMark`` the adapter put in its event stream as it read the book (None: the book is as of the
    # engine's next step - the simulator's, which has no queue of events between it and the engine)
    mark: int | None = None


BrokerEvent = Tick | OrderStatusEvent | FillEvent | CommissionEvent | NoticeEvent | BookMark


class Broker(Protocol):
    """What the engine needs from a broker connection."""

    name: str

    def now_ns(self) -> int:
        """The broker's clock: virtual time for the simulator, wall time for a real connection."""
        ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def qualify(self, symbol: str) -> ContractInfo:
        """Resolve a symbol to a tradeable contract; raises ``UnknownSymbol``."""
        ...

    async def daily_bars(self, symbol: str, days: int) -> list[Bar]: ...

    async def subscribe(self, symbol: str) -> None: ...

    async def resubscribe(self, symbol: str) -> None:
        """Renew a quote subscription that went silent: cancel it (if the broker has one) and ask again."""
        ...

    def regular_session(self, symbol: str, ts_ns: int) -> tuple[int, int] | None:
        """(open_ns, close_ns) of ``symbol``'s regular session that ``ts_ns`` falls in, or None outside one:
        outside it a silent feed is normal and the stale-tick watchdog stays quiet."""
        ...

    def feed_state(self) -> str:
        """One line on the market-data feed's health (connectivity, data farms), for alerts."""
        ...

    def place_order(self, order: BrokerOrder) -> int:
        """Send an order without waiting; returns the broker's order id.  Outcomes arrive as events."""
        ...

    def cancel_order(self, order_id: int) -> None: ...

    async def what_if(self, order: BrokerOrder) -> WhatIf: ...

    async def positions(self, account: str) -> dict[str, Decimal]: ...

    async def order_book(self, full: bool = True, known: KnownToEngine | None = None) -> OrderBook:
        """Everything needed to reconcile the journal with the broker after a (re)start.  ``full`` False: a routine
        pass on a live connection, which may leave out what the connection already reported (IB: the day's
        completed orders).  ``known``: executions and ended orders the engine holds already, left out of the
        book (see ``KnownToEngine``)."""
        ...

    async def next_events(self, wake_at_ns: int | None) -> list[BrokerEvent]:
        """Wait for events, returning what is ready (at least one), or an empty list at ``wake_at_ns``.  An adapter
        whose events come from a socket yields to the event loop on every call, ``wake_at_ns`` already past or not:
        engine steps that are due at once, one after the other, must not keep the loop from reading the socket."""
        ...
