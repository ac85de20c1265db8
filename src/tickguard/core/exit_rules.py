"""Exit rules (pure core): their validated specs and the level arithmetic.

Every rule is evaluated in *signed price space* (x = sign * price, sign = +1 long / -1 short; prices in the
integer units of ``price_grid``) so one
formula serves both directions: a protective stop fires when x falls to its level, a target when x rises
to it.  Keeping long and short in one code path is deliberate: a mirrored copy is where sign bugs hide.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickguard.core.model import TriggerSource
from tickguard.core.money import decimal_of
from tickguard.core.price_grid import PriceGrid
from tickguard.core.volatility import VolSnapshot

Unit = Literal["price", "atr", "adr"]


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StopLoss(_Rule):
    """Protective stop for the whole open position: a fixed ``price``, or ``distance`` units from entry.

    ``allow_loosen``: when the ATR grows, an ATR-sized stop would move away from the price; by default it
    does not (a stop only ever tightens).  Set it to let the stop follow the volatility both ways.
    """

    kind: Literal["stop_loss"] = "stop_loss"
    price: float | None = Field(default=None, gt=0)
    distance: float | None = Field(default=None, gt=0)
    unit: Unit = "atr"
    allow_loosen: bool = False
    trigger: TriggerSource = TriggerSource.AUTO

    @model_validator(mode="after")
    def _one_of(self) -> StopLoss:
        _exactly_one(self.price, self.distance, "stop_loss")
        return self


class TakeProfit(_Rule):
    """One take-profit leg exiting ``fraction`` of the filled position at a price or a distance."""

    kind: Literal["take_profit"] = "take_profit"
    fraction: Decimal = Field(default=Decimal(1), gt=0, le=1, allow_inf_nan=False)
    price: float | None = Field(default=None, gt=0)
    distance: float | None = Field(default=None, gt=0)
    unit: Unit = "atr"
    trigger: TriggerSource = TriggerSource.AUTO

    @model_validator(mode="after")
    def _one_of(self) -> TakeProfit:
        _exactly_one(self.price, self.distance, "take_profit")
        return self


class TrailingStop(_Rule):
    """Stop ``distance`` units behind the best price since entry; only ever tightens.

    ``activate_after``: trail only once the trade has been this many units in profit (None = at once).
    """

    kind: Literal["trailing_stop"] = "trailing_stop"
    distance: float = Field(gt=0)
    unit: Unit = "atr"
    activate_after: float | None = Field(default=None, ge=0)
    trigger: TriggerSource = TriggerSource.AUTO


class BreakEven(_Rule):
    """Once the trade is ``after`` units in profit, the stop moves to entry + ``offset`` (price units)."""

    kind: Literal["break_even"] = "break_even"
    after: float = Field(gt=0)
    unit: Unit = "atr"
    offset: float = 0.0

    @model_validator(mode="after")
    def _offset_below_trigger(self) -> BreakEven:
        if self.unit == "price" and self.offset >= self.after:
            raise ValueError("break_even.offset must be smaller than 'after', or the move would fire at once")
        return self


class TimeStop(_Rule):
    """Exit the whole position ``after_seconds`` after the entry fill, or at clock time ``at`` in ``tz``."""

    kind: Literal["time_stop"] = "time_stop"
    after_seconds: float | None = Field(default=None, gt=0)
    at: dt.time | None = None
    tz: str = "America/New_York"

    @model_validator(mode="after")
    def _one_of(self) -> TimeStop:
        _exactly_one(self.after_seconds, self.at, "time_stop", names=("after_seconds", "at"))
        return self

    @field_validator("tz")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    def deadline_ns(self, entry_ns: int) -> int:
        """The first moment at or after the entry at which this stop fires."""
        if self.after_seconds is not None:
            return entry_ns + int(self.after_seconds * 1e9)
        assert self.at is not None
        zone = ZoneInfo(self.tz)
        entered = dt.datetime.fromtimestamp(entry_ns / 1e9, tz=zone)
        target = dt.datetime.combine(entered.date(), self.at, tzinfo=zone)
        if target <= entered:
            target = dt.datetime.combine(entered.date() + dt.timedelta(days=1), self.at, tzinfo=zone)
        return int(target.timestamp() * 1e9)


ExitRule = Annotated[
    StopLoss | TakeProfit | TrailingStop | BreakEven | TimeStop, Field(discriminator="kind")
]


def _exactly_one(a: object, b: object, rule: str, names: tuple[str, str] = ("price", "distance")) -> None:
    if (a is None) == (b is None):
        raise ValueError(f"{rule} needs exactly one of '{names[0]}' or '{names[1]}'")


# ----------------------------------------------------------------------------------------------- arithmetic
#
# Levels are integers in grid units (``price_grid``), in signed space.  ``entry_x`` is the signed average entry
# in units, an exact fraction (an average of several fills need not be on the grid).  The one rounding rule:
# a distance is a whole number of ticks, rounded down, at least one; a level is put on the grid towards the
# entry - a stop up in signed space (tighter), a target down (nearer).


VOLATILITY_DIGITS = 12


def unit_size(unit: Unit, vol: VolSnapshot) -> Decimal:
    """Price value of one unit (``price`` units are 1:1).  ATR and ADR are statistics computed in floating
    point from float bars: ten bars of range 0.02 average to 0.01999999999999602, which floored to whole ticks
    would lose a tick.  So a volatility figure is taken to ``VOLATILITY_DIGITS`` significant digits - far finer
    than any tick, far coarser than the float noise - before a distance is measured with it."""
    if unit == "atr":
        return statistic(vol.atr)
    if unit == "adr":
        return statistic(vol.adr)
    return Decimal(1)


def statistic(x: float) -> Decimal:
    """A volatility figure as the decimal it stands for: ``VOLATILITY_DIGITS`` significant digits."""
    return Decimal(format(x, f".{VOLATILITY_DIGITS}g"))


def rule_distance(value: float, unit: Unit, vol: VolSnapshot, grid: PriceGrid, minimum: int = 1) -> int:
    """``value`` units of ATR / ADR / price as a distance in grid units: whole ticks, rounded down, at least
    ``minimum`` ticks."""
    return grid.distance(decimal_of(value) * unit_size(unit, vol), minimum)


def stop_x(rule: StopLoss, sign: int, entry_x: Fraction, vol: VolSnapshot, grid: PriceGrid) -> int:
    """Signed-space level of a stop-loss: its price, or its distance from the entry rounded tighter."""
    if rule.price is not None:
        return sign * grid.exact_units(rule.price)
    assert rule.distance is not None
    return grid.up(entry_x - rule_distance(rule.distance, rule.unit, vol, grid))


def target_x(rule: TakeProfit, sign: int, entry_x: Fraction, vol: VolSnapshot, grid: PriceGrid) -> int:
    """Signed-space level of a take-profit leg: its price, or its distance from the entry rounded nearer."""
    if rule.price is not None:
        return sign * grid.exact_units(rule.price)
    assert rule.distance is not None
    return grid.down(entry_x + rule_distance(rule.distance, rule.unit, vol, grid))


@dataclass(slots=True, frozen=True)
class StopMotion:
    """How a trade's stop moves with its best price, sized for one volatility and one entry: the trailing
    distance and the best price from which the trail is active, the best at which the break-even arms and
    the level it moves the stop to (signed units; None: no such rule, or active at once for ``trail_from``).
    Computed when the trade is sized, so a new best costs integer arithmetic only."""

    trail_d: int | None = None
    trail_from: int | None = None
    be_from: int | None = None
    be_level: int | None = None

    def trail_level(self, best_x: int) -> int | None:
        """The trailing level for a best of ``best_x`` (on the grid, rounded tighter), or None if inactive."""
        if self.trail_d is None or (self.trail_from is not None and best_x < self.trail_from):
            return None
        level = best_x - self.trail_d
        return level + (level & 1)  # a mid's best may be a half tick: up to the grid

    def break_even(self, best_x: int) -> int | None:
        """The break-even level once ``best_x`` has reached its threshold, else None."""
        if self.be_from is None or best_x < self.be_from:
            return None
        return self.be_level


def stop_motion(trail: TrailingStop | None, be: BreakEven | None, entry_x: Fraction, vol: VolSnapshot,
                grid: PriceGrid) -> StopMotion:
    """The moving parts of a stop for an entry and a volatility (see ``StopMotion``).

    A best is an integer, so "best - entry >= threshold" is "best >= ceil(entry + threshold)"."""
    trail_d = trail_from = be_from = be_level = None
    if trail is not None:
        trail_d = rule_distance(trail.distance, trail.unit, vol, grid)
        if trail.activate_after is not None:
            trail_from = math.ceil(entry_x + rule_distance(trail.activate_after, trail.unit, vol, grid, minimum=0))
    if be is not None:
        be_from = math.ceil(entry_x + rule_distance(be.after, be.unit, vol, grid))
        be_level = grid.up(entry_x + grid.fraction(decimal_of(be.offset)))
    return StopMotion(trail_d, trail_from, be_from, be_level)
