"""Prices on an instrument's tick grid, computed exactly.

Why: IB refuses a limit price that is not a whole number of the contract's minimum tick (error 110), and
it judges the text the client sends: ib_async writes ``str(float)``, so ``169.37 + 0.02`` goes out as
``169.39000000000001`` and is refused although it "is" 169.39. Float arithmetic (``round(x / tick) * tick``,
``bid - offset``) produces exactly that noise, so everything here is done in ``Decimal`` built from each
float's shortest text (``Decimal(str(x))``: the number the user or the feed meant), and the result is handed
back as ``float(Decimal)``, whose ``str`` is the grid price's own text again. No tolerance anywhere: a
price is on the grid or it is not.

Why a direction and not "nearest": an exit limit must stay marketable, so a sell rounds down and a buy
rounds up — never less aggressive than the configured offset asked for.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import Enum

from tickguard.core.money import decimal_of as exact  # the one float -> decimal conversion

_PRECISION = 50  # digits; a float's shortest text has at most 17, so quotients and products stay exact


class Rounding(Enum):
    """Which way an off-grid price moves onto the grid."""

    DOWN = ROUND_FLOOR
    UP = ROUND_CEILING


def _tick(tick: float) -> Decimal:
    step = exact(tick)
    if not step.is_finite() or step <= 0:
        raise ValueError(f"tick must be a positive number, got {tick!r}")
    return step


def on_grid(price: float | Decimal, tick: float) -> bool:
    """Is ``price`` a whole number of ``tick``s, exactly (``169.39000000000001`` is not, on 0.01)?"""
    value = exact(price)
    if not value.is_finite():
        return False
    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        return value % _tick(tick) == 0


def snap(price: float | Decimal, tick: float, direction: Rounding) -> float:
    """``price`` moved onto the grid of ``tick`` in ``direction`` (unchanged when already on it)."""
    step = _tick(tick)
    value = exact(price)
    if not value.is_finite():
        raise ValueError(f"price must be finite, got {price!r}")
    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        steps = (value / step).to_integral_value(rounding=direction.value)
        return float(steps * step)


def marketable_limit(touch: float, offset: float, tick: float, buy: bool) -> float:
    """A limit ``offset`` beyond the touch (above it for a buy, below for a sell), on the grid.

    The offset is applied in Decimal (``169.37 + 0.02`` is 169.39, not ``169.39000000000001``), then the
    price is snapped away from the touch: up for a buy, down for a sell, so an off-grid offset such as
    0.003 on a 0.01 tick becomes a whole tick — at least as marketable as configured, never less.
    """
    value = exact(touch) + exact(offset) if buy else exact(touch) - exact(offset)
    return snap(value, tick, Rounding.UP if buy else Rounding.DOWN)
