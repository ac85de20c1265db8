"""A trade's journal snapshot and its reading back after a restart.

Ticks are not journaled, so a snapshot holds everything about a trade that ticks have shaped - best
price, trailing and break-even levels, leg counters - and a restart must not forget.  The trade manager
writes and reads these; the re-arming of levels and timers stays with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tickguard.core.model import TradeState
from tickguard.core.money import decimal_of, exact
from tickguard.core.price_grid import PriceGrid
from tickguard.core.stop_motion import StopTracker
from tickguard.core.trades import NO_BEST, Trade

_FIELDS = ("entry_working", "entry_ts_ns", "time_deadline_ns", "closing", "close_reason", "reason")
_AMOUNTS = ("entry_filled", "entry_cost", "entry_avg", "exited", "exit_proceeds", "commissions")  # exact decimals
_STOP_PARTS = ("stop_base_x", "trail_x", "be_x")  # signed prices; stops round tighter when read back
_DUST = Fraction(1, 10**6)  # of a unit: float noise in a journal written before prices were exact


def snapshot(trade: Trade, stops: StopTracker, armed: Callable[[int], bool], grid: PriceGrid) -> dict[str, Any]:
    """Everything about a trade that ticks have shaped and a restart must not forget.

    Levels are written as signed prices (exact decimal text), not as grid units: a journal read back by an
    engine that knows the instrument's tick differently still means the same prices."""
    def price(x: int | None) -> Decimal | None:
        return None if x is None else grid.price(x)

    best = stops.best_x(trade)
    snap: dict[str, Any] = {name: getattr(trade, name) for name in (*_FIELDS, *_AMOUNTS)}
    snap.update({
        "state": trade.state.value,
        "tick": grid.tick,
        "realized": trade.realized,  # for views; a restore rebuilds it from the cost and proceeds
        "best_x": None if best == NO_BEST else price(best),
        "stop_base_x": price(trade.stop_base_x),
        "trail_x": price(stops.trail_x(trade)),
        "be_x": price(trade.be_x),
        "legs": {leg.name: {"fired": leg.fired, "failures": leg.failures, "filled": leg.filled,
                            "inflight": leg.inflight, "level_x": price(leg.level_x), "armed": armed(leg.level_id)}
                 for leg in trade.legs()},
    })
    return snap


def apply_snapshot(trade: Trade, snap: dict[str, Any], grid: PriceGrid) -> list[str]:
    """Set a freshly built trade to its journaled state; returns the names of the legs that were armed."""
    trade.state = TradeState(snap["state"])
    for name in _FIELDS:
        setattr(trade, name, snap[name])
    _restore_amounts(trade, snap)
    for name in _STOP_PARTS:
        setattr(trade, name, _units(grid, snap[name], PriceGrid.up))
    best = _units(grid, snap["best_x"], math.floor)
    trade.best_x = NO_BEST if best is None else best
    armed = []
    for leg in trade.legs():
        saved = snap["legs"].get(leg.name)
        if saved is None:
            continue
        leg.fired, leg.filled, leg.inflight = saved["fired"], exact(saved["filled"]), exact(saved["inflight"])
        leg.failures = saved.get("failures", 0)  # absent in snapshots written before the retry policy
        leg.level_x = _units(grid, saved["level_x"], PriceGrid.up if leg.terminal else PriceGrid.down)
        if saved["armed"] and leg.level_x is not None:
            armed.append(leg.name)
    return armed


def _units(grid: PriceGrid, value: str | float | None, onto: Callable[[Fraction], int]) -> int | None:
    """A journaled signed price in ``grid`` units.  Exact text on the grid converts exactly; a level off the
    grid (written with another tick, or a float of an old journal) goes onto it by the rounding rule, ``onto``:
    a stop tighter, a target nearer - after float noise (``169.39000000000001``) is taken for what it is."""
    if value is None:
        return None
    x = grid.fraction(decimal_of(value))
    if isinstance(value, float) and abs(x - round(x)) < _DUST:
        x = Fraction(round(x))
    return onto(x)


def _restore_amounts(trade: Trade, snap: dict[str, Any]) -> None:
    """Quantities and money back as exact decimals (the journal keeps them as text).

    A snapshot written before amounts were exact holds floats and an average entry and realized P&L instead
    of the cost and proceeds sums: those are rebuilt from them (exact for the quantities, which are whole)."""
    if "entry_cost" in snap:
        for name in _AMOUNTS:
            setattr(trade, name, exact(snap[name]))
        return
    trade.entry_filled, trade.exited = exact(snap["entry_filled"]), exact(snap["exited"])
    trade.commissions = exact(snap["commissions"])
    trade.entry_avg = avg = exact(snap["entry_avg"])
    trade.entry_cost = avg * trade.entry_filled
    trade.exit_proceeds = trade.sign * exact(snap["realized"]) + avg * trade.exited
