"""How much an exit leg sells (or buys back): whole lots, and take-profit fractions that always add up.

Kept apart from the trade manager because it is pure arithmetic on a trade's counters, and the place a
rounding bug would leave a position open.
"""

from __future__ import annotations

from decimal import Decimal

from tickguard.core.money import ZERO
from tickguard.core.trades import Leg, Trade


def whole_lots(qty: Decimal, lot: Decimal) -> Decimal:
    """``qty`` rounded down to a whole number of lots (exact: no tolerance decides a lot)."""
    return (qty // lot) * lot if qty > 0 else ZERO


def target_wants(trade: Trade, leg: Leg, lot: Decimal) -> Decimal:
    """Quantity a take-profit leg still has to exit: its share of what is filled, less what it has exited or
    has in flight.  The last leg takes the remainder, so the fractions always close the whole position."""
    filled = trade.entry_filled
    if leg is trade.targets[-1]:
        alloc = filled - sum((whole_lots(o.fraction * filled, lot) for o in trade.targets[:-1]), ZERO)
    else:
        alloc = whole_lots(leg.fraction * filled, lot)
    want = alloc - leg.filled - leg.inflight
    return min(want, trade.open_qty - trade.inflight)
