"""Exit rules (pure core): their validated specs and the level arithmetic.

Every rule is evaluated in *signed price space* (x = sign * price, sign = +1 long / -1 short) so one
formula serves both directions: a protective stop fires when x falls to its level, a target when x rises
to it.  Keeping long and short in one code path is deliberate: a mirrored copy is where sign bugs hide.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickguard.core.model import TriggerSource

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


def unit_size(unit: Unit, atr: float, adr: float) -> float:
    """Price value of one unit.  ``price`` units are 1:1."""
    if unit == "atr":
        return atr
    if unit == "adr":
        return adr
    return 1.0


def stop_x(rule: StopLoss, sign: int, entry: float, atr: float, adr: float) -> float:
    """Signed-space level of a stop-loss."""
    if rule.price is not None:
        return sign * rule.price
    assert rule.distance is not None
    return sign * entry - rule.distance * unit_size(rule.unit, atr, adr)


def target_x(rule: TakeProfit, sign: int, entry: float, atr: float, adr: float) -> float:
    """Signed-space level of a take-profit leg."""
    if rule.price is not None:
        return sign * rule.price
    assert rule.distance is not None
    return sign * entry + rule.distance * unit_size(rule.unit, atr, adr)


def trail_x(rule: TrailingStop, sign: int, entry: float, best_x: float, atr: float, adr: float) -> float | None:
    """Signed-space trailing level given the best signed price since entry, or None while inactive."""
    unit = unit_size(rule.unit, atr, adr)
    if rule.activate_after is not None and best_x - sign * entry < rule.activate_after * unit:
        return None
    return best_x - rule.distance * unit


def break_even_x(rule: BreakEven, sign: int, entry: float, best_x: float, atr: float, adr: float) -> float | None:
    """Signed-space break-even stop once armed, else None."""
    if best_x - sign * entry < rule.after * unit_size(rule.unit, atr, adr):
        return None
    return sign * entry + rule.offset
