"""Money and quantities as exact decimals.

Why: a float running sum drifts (0.1 + 0.2 != 0.3), and an over-fill must be detectable by equality, not
by a tolerance that hides one lot in a million.  IB itself sends quantities as decimals.  So every quantity,
fill price, commission and P&L figure in the engine is a ``Decimal``, converted once where it enters (the
broker adapters, a user's request) with ``exact``, and only sums and products of those are kept.  Trigger
levels are prices of another kind (compared on every tick) and are not handled here.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

ZERO = Decimal(0)

# Quotients (an average entry price, a share of a position) are the only inexact step; this precision keeps
# them far below any currency's minor unit.  Sums and products of exact inputs stay exact at any precision
# that holds them, and 40 digits holds any realistic position value.
_CONTEXT = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)


def decimal_of(x: float | int | str | Decimal) -> Decimal:
    """The decimal a value stands for: a float's shortest round-tripping text (``0.1`` -> ``Decimal('0.1')``;
    a whole float is a whole decimal: ``300.0`` -> ``Decimal('300')``).  NaN and infinities pass through as
    the decimal's own: the callers that must refuse them (``exact``) or judge them (``price_grid``) do."""
    if isinstance(x, float) and x.is_integer():
        return Decimal(int(x))
    return x if isinstance(x, Decimal) else Decimal(str(x))


def exact(x: float | int | str | Decimal) -> Decimal:
    """``decimal_of(x)``, refusing NaN and infinities: they are never a quantity or an amount of money."""
    value = decimal_of(x)
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {x!r}")
    return value


def ratio(numerator: Decimal, denominator: Decimal) -> Decimal:
    """``numerator / denominator`` at the engine's fixed precision (the one place a quotient is formed)."""
    return _CONTEXT.divide(numerator, denominator)

