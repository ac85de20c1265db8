"""Trades and their legs: the request a user submits (validated) and the live state the manager keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickguard.core.exit_rules import BreakEven, ExitRule, StopLoss, StopMotion, TakeProfit, TimeStop, TrailingStop
from tickguard.core.model import OrderType, Side, TradeState, TriggerSource
from tickguard.core.money import ZERO, ratio
from tickguard.core.price_grid import FAR, PriceGrid
from tickguard.core.volatility import VolSnapshot

NO_BEST = -FAR  # best signed price before the first entry fill: below any price

class TradeRequest(BaseModel):
    """What a user asks for.  Validation here covers everything knowable without market data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1)
    side: Side
    qty: Decimal = Field(gt=0, allow_inf_nan=False)
    entry_type: OrderType = OrderType.MARKET
    limit_price: float | None = Field(default=None, gt=0)
    entry_timeout_s: float | None = Field(default=None, gt=0)
    rules: list[ExitRule] = Field(min_length=1)
    user: str = Field(default="demo", min_length=1)
    account: str | None = Field(default=None, min_length=1,
                                description="The broker account; None = the connection's account ([ib].account).")
    ref: str | None = Field(default=None, min_length=1, max_length=64,
                            description="The client's own reference: a second request with the same user "
                                        "and ref is refused, so re-submitting after a restart is safe.")

    @field_validator("symbol")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.strip().upper()

    @model_validator(mode="after")
    def _consistent(self) -> TradeRequest:
        if self.entry_type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("a limit entry needs limit_price")
        if self.entry_type is OrderType.MARKET and self.limit_price is not None:
            raise ValueError("a market entry takes no limit_price")
        kinds = [r.kind for r in self.rules]
        for single in ("stop_loss", "trailing_stop", "break_even", "time_stop"):
            if kinds.count(single) > 1:
                raise ValueError(f"at most one {single} rule per trade")
        tps = [r for r in self.rules if isinstance(r, TakeProfit)]
        total = sum((r.fraction for r in tps), ZERO)
        if tps and total != 1:  # exact: 0.5 + 0.3 + 0.2 is 1, and 0.33 * 3 is not
            raise ValueError(f"take_profit fractions must sum to 1, they sum to {total}")
        if not any(isinstance(r, StopLoss | TrailingStop | TimeStop | TakeProfit) for r in self.rules):
            raise ValueError("a trade needs at least one exit rule that closes it (break_even alone does not)")
        if any(isinstance(r, BreakEven) for r in self.rules) and not any(
            isinstance(r, StopLoss | TrailingStop) for r in self.rules
        ):
            raise ValueError("break_even moves a stop: it needs a stop_loss or trailing_stop rule")
        return self

    @cached_property
    def rules_by_type(self) -> dict[type, Any]:
        return {type(r): r for r in self.rules}

    def rule(self, cls: type) -> Any:
        """The request's rule of one kind (looked up on every stop move, so cached)."""
        return self.rules_by_type.get(cls)


@dataclass(slots=True)
class Leg:
    """One exit leg.  ``fired`` numbers the leg's firings: it is part of every exit's idempotency key."""

    trade_id: str
    name: str  # "stop", "time", "tp1", "tp2", ...
    level_id: int
    source: TriggerSource
    fraction: Decimal = Decimal(1)  # of the filled entry; terminal legs take what is open
    rule: TakeProfit | None = None
    level_x: int | None = None  # signed grid units (price_grid)
    fired: int = 0
    failures: int = 0  # exits of this leg the broker refused: the retry policy escalates on it (exit_orders)
    filled: Decimal = ZERO
    inflight: Decimal = ZERO

    @property
    def terminal(self) -> bool:
        """Stop and time legs close the whole trade; take-profit legs close a fraction."""
        return self.rule is None


@dataclass(slots=True)
class Trade:
    id: str
    request: TradeRequest
    sign: int
    created_ns: int
    _state: TradeState = TradeState.PENDING_ENTRY  # read and set as ``state``: a change is told to ``watcher``
    entry_key: str = ""
    entry_working: bool = False
    entry_filled: Decimal = ZERO
    entry_cost: Decimal = ZERO  # sum of entry fill price x qty: the exact basis of the average entry
    entry_avg: Decimal = ZERO  # the average entry, for people (levels use entry_cost / entry_filled exactly)
    entry_ts_ns: int | None = None
    exited: Decimal = ZERO
    exit_proceeds: Decimal = ZERO  # sum of exit fill price x qty
    commissions: Decimal = ZERO
    # Signed grid units (price_grid): the best price since entry and the stop's components
    best_x: int = NO_BEST
    stop_base_x: int | None = None  # the stop_loss component, ratcheted unless allow_loosen
    trail_x: int | None = None
    be_x: int | None = None
    motion: StopMotion | None = None  # how the stop moves, sized for ``motion_vol`` (stop_motion)
    motion_vol: VolSnapshot | None = None
    stop: Leg | None = None
    time_leg: Leg | None = None
    targets: list[Leg] = field(default_factory=list)
    time_deadline_ns: int | None = None
    closing: bool = False
    grouped: bool = False  # its trailing stop is in a trail group (level = mark - distance)
    close_reason: str = ""
    reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    # told of every change of ``state`` (the trade and the state before): ``core.live_trades`` keeps its index so
    watcher: Callable[[Trade, TradeState], None] | None = field(default=None, repr=False, compare=False)

    @property
    def state(self) -> TradeState:
        return self._state

    @state.setter
    def state(self, new: TradeState) -> None:
        """Every change of a trade's state passes here, wherever it is made (the manager, a halt, a restore), so an
        index of trades by state cannot miss one."""
        before = self._state
        self._state = new
        if new is not before and self.watcher is not None:
            self.watcher(self, before)

    @property
    def symbol(self) -> str:
        return self.request.symbol

    @property
    def side(self) -> Side:
        return self.request.side

    @property
    def open_qty(self) -> Decimal:
        return self.entry_filled - self.exited

    @property
    def inflight(self) -> Decimal:
        total = sum((leg.inflight for leg in self.targets), ZERO)
        if self.stop is not None:
            total += self.stop.inflight
        if self.time_leg is not None:
            total += self.time_leg.inflight
        return total

    def cost_of(self, qty: Decimal) -> Decimal:
        """The entry cost of ``qty`` of the position, at the average entry (exact when ``qty`` is all of it)."""
        if self.entry_filled == 0:
            return ZERO
        return self.entry_cost if qty == self.entry_filled else ratio(self.entry_cost * qty, self.entry_filled)

    def entry_x(self, grid: PriceGrid) -> Fraction:
        """The signed average entry in grid units, exactly (a fraction: an average need not be on the grid)."""
        return self.sign * grid.fraction(Fraction(self.entry_cost) / Fraction(self.entry_filled))

    @property
    def realized(self) -> Decimal:
        """Realized P&L before commissions: exit proceeds less the entry cost of what was exited."""
        return self.sign * (self.exit_proceeds - self.cost_of(self.exited))

    def legs(self) -> list[Leg]:
        legs = [leg for leg in (self.stop, self.time_leg) if leg is not None]
        return legs + self.targets

    def leg(self, name: str) -> Leg:
        leg = self.find_leg(name)
        if leg is None:
            raise KeyError(f"trade {self.id} has no leg {name!r}")
        return leg

    def find_leg(self, name: str) -> Leg | None:
        """The leg called ``name``, or None (a journaled order's leg the trade no longer has)."""
        return next((leg for leg in self.legs() if leg.name == name), None)

    def unrealized(self, mark: Decimal | None) -> Decimal:
        """P&L of the open quantity at ``mark`` (zero without a mark or a position)."""
        if mark is None or self.entry_filled == 0:
            return ZERO
        open_qty = self.open_qty
        return self.sign * (mark * open_qty - self.cost_of(open_qty))
