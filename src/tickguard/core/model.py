"""The engine's shared vocabulary (see design.md): small immutable values passed between layers.

Everything here is plain data so the pure core can be tested without asyncio or I/O.  A tick's prices are
integer units of its instrument's grid (half-ticks, see ``price_grid``), converted once at the adapter; prices
that leave the core (trigger reports, limits) are exact ``Decimal``s.  Times are integer nanoseconds since the
epoch (UTC).  So ordering and arithmetic are exact everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from tickguard.core.money import decimal_of, exact


class Side(StrEnum):
    """Direction of a trade (not of an order)."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        """+1 for long, -1 for short: the core works in *signed price* space, x = sign * price.

        In that space every trade looks long: stops fire when x falls to the level, targets when it rises.
        """
        return 1 if self is Side.LONG else -1

    @property
    def entry_action(self) -> Action:
        return Action.BUY if self is Side.LONG else Action.SELL

    @property
    def exit_action(self) -> Action:
        return Action.SELL if self is Side.LONG else Action.BUY


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MKT"
    LIMIT = "LMT"


class TradeState(StrEnum):
    PENDING_ENTRY = "pending_entry"
    OPEN = "open"
    EXITING = "exiting"
    CLOSED = "closed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    HALTED = "halted"  # an over-fill was refused: nothing automated is sent for it any more (core/halts.py)

    @property
    def is_final(self) -> bool:
        """Over: nothing left of the trade.  A halted trade is not over - it keeps its position and is loaded
        again at restart - but it is not ``automated`` either."""
        return self in _FINAL_TRADE_STATES  # a set built once: naming the members here cost ~1 µs a call

    @property
    def automated(self) -> bool:
        """Does the engine still act for the trade (fire, retry, re-arm, move stops, run timers)?"""
        return self in _AUTOMATED_TRADE_STATES


_FINAL_TRADE_STATES = frozenset({TradeState.CLOSED, TradeState.REJECTED, TradeState.CANCELLED})
_AUTOMATED_TRADE_STATES = frozenset({TradeState.PENDING_ENTRY, TradeState.OPEN, TradeState.EXITING})


class PriorityClass(IntEnum):
    """Order in which a throttle spends its budget; lower value goes first."""

    EXIT_CRITICAL = 0
    EXIT = 1
    ENTRY = 2
    WHAT_IF = 3
    DATA = 4


class TriggerSource(StrEnum):
    """Which price a level watches. AUTO = the side the exit order would hit (bid for sells, ask for buys)."""

    AUTO = "auto"
    BID = "bid"
    ASK = "ask"
    LAST = "last"
    MID = "mid"

    def resolve(self, side: Side) -> TriggerSource:
        if self is TriggerSource.AUTO:
            return TriggerSource.BID if side is Side.LONG else TriggerSource.ASK
        return self


class Tick(NamedTuple):
    """One quote/trade update, its prices in grid units (``price_grid``: even integers, half-ticks).

    ``last`` is ``NO_PRICE`` (0) when the feed carries quotes only.

    An immutable tuple, not a frozen dataclass: the adapter makes one per quote (a dozen per socket read at 10k
    quotes/s), and a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` - 1.4 us a
    tick against 0.4 for the tuple (timeit, warm); a field reads ~15 ns slower, and the tick path reads few
    (bench/read_cost.py measures the whole read)."""

    symbol: str
    bid: int
    ask: int
    last: int
    size: float
    ts_ns: int  # exchange timestamp
    recv_ns: int  # when the engine received it
    seq: int = 0  # feed sequence number, used by reports and replay

    def price(self, source: TriggerSource) -> int:
        """The tick's price on ``source``, in units; 0 when it has none (no last).  The mid is exact:
        bid and ask are whole ticks (even units), so their mean is a whole number of half-ticks."""
        if source is TriggerSource.BID:
            return self.bid
        if source is TriggerSource.ASK:
            return self.ask
        if source is TriggerSource.MID:
            return (self.bid + self.ask) >> 1
        if source is TriggerSource.LAST:
            return self.last
        raise ValueError(f"trigger source {source!r} must be resolved before pricing a tick")


@dataclass(slots=True, frozen=True)
class TriggerInfo:
    """Why an exit fired: the price that crossed, the level it crossed (exact prices; None when there is
    none, e.g. a time stop), and the tick that carried it."""

    rule: str
    level: Decimal | None
    price: Decimal | None
    tick_seq: int
    tick_ts_ns: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, prices as decimal text: the one serialisation of a trigger."""
        return {"rule": self.rule, "level": _text(self.level), "price": _text(self.price),
                "tick_seq": self.tick_seq, "tick_ts_ns": self.tick_ts_ns}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriggerInfo:
        return cls(data["rule"], price_of(data["level"]), price_of(data["price"]), data["tick_seq"],
                   data["tick_ts_ns"])


@dataclass(slots=True, frozen=True)
class OrderIntent:
    """What the engine wants sent.  ``key`` is the idempotency key that goes into IB's ``orderRef``."""

    key: str
    trade_id: str
    leg: str
    user: str
    account: str
    symbol: str
    action: Action
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None  # on the instrument's grid (``price_grid``)
    priority: PriorityClass
    created_ns: int
    trigger: TriggerInfo | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.qty, Decimal):  # a quantity is exact from the moment an intent exists
            object.__setattr__(self, "qty", exact(self.qty))
        if self.limit_price is not None and not isinstance(self.limit_price, Decimal):  # so is a limit price
            object.__setattr__(self, "limit_price", exact(self.limit_price))

    @property
    def is_exit(self) -> bool:
        return self.leg != "entry"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the journal stores it: the one serialisation of an intent (``from_dict``
        reads it back after a restart, so the two live side by side)."""
        return {
            "key": self.key, "trade_id": self.trade_id, "leg": self.leg, "user": self.user,
            "account": self.account, "symbol": self.symbol, "action": self.action.value, "qty": str(self.qty),
            "order_type": self.order_type.value, "limit_price": _text(self.limit_price), "priority": int(self.priority),
            "created_ns": self.created_ns, "trigger": None if self.trigger is None else self.trigger.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderIntent:
        trigger = data.get("trigger")
        return cls(
            key=data["key"], trade_id=data["trade_id"], leg=data["leg"], user=data["user"],
            account=data["account"], symbol=data["symbol"], action=Action(data["action"]), qty=exact(data["qty"]),
            order_type=OrderType(data["order_type"]), limit_price=price_of(data["limit_price"]),
            priority=PriorityClass(data["priority"]), created_ns=data["created_ns"],
            trigger=None if trigger is None else TriggerInfo.from_dict(trigger),
        )


@dataclass(slots=True, frozen=True)
class Bar:
    """A daily or intraday OHLC bar; ``ts_ns`` is the bar's start."""

    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


def price_of(value: str | float | None) -> Decimal | None:
    """A journaled price back as a decimal (journals written before prices were exact hold floats, and NaN
    or None for "no price")."""
    if value is None:
        return None
    price = decimal_of(value)
    return price if price.is_finite() else None


def _text(price: Decimal | None) -> str | None:
    return None if price is None else str(price)
