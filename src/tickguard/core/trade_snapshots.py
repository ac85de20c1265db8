"""A trade's journal snapshot and its reading back after a restart.

Ticks are not journaled, so a snapshot holds everything about a trade that ticks have shaped - best
price, trailing and break-even levels, leg counters - and a restart must not forget.  The trade manager
writes and reads these; the re-arming of levels and timers stays with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tickguard.core.model import TradeState
from tickguard.core.money import exact
from tickguard.core.stop_motion import StopTracker
from tickguard.core.trades import Trade

_FIELDS = ("entry_working", "entry_avg", "entry_ts_ns", "stop_base_x", "trail_x", "be_x", "time_deadline_ns",
           "closing", "close_reason", "reason")
_AMOUNTS = ("entry_filled", "entry_cost", "exited", "exit_proceeds", "commissions")  # exact decimals


def snapshot(trade: Trade, stops: StopTracker, armed: Callable[[int], bool]) -> dict[str, Any]:
    """Everything about a trade that ticks have shaped and a restart must not forget."""
    best = stops.best_x(trade)
    snap: dict[str, Any] = {name: getattr(trade, name) for name in (*_FIELDS, *_AMOUNTS)}
    snap.update({
        "state": trade.state.value,
        "realized": trade.realized,  # for views; a restore rebuilds it from the cost and proceeds
        "best_x": best if math.isfinite(best) else None,
        "trail_x": stops.trail_x(trade),
        "legs": {leg.name: {"fired": leg.fired, "filled": leg.filled, "inflight": leg.inflight,
                            "level_x": leg.level_x, "armed": armed(leg.level_id)}
                 for leg in trade.legs()},
    })
    return snap


def apply_snapshot(trade: Trade, snap: dict[str, Any]) -> list[str]:
    """Set a freshly built trade to its journaled state; returns the names of the legs that were armed."""
    trade.state = TradeState(snap["state"])
    for name in _FIELDS:
        setattr(trade, name, snap[name])
    _restore_amounts(trade, snap)
    trade.best_x = -math.inf if snap["best_x"] is None else snap["best_x"]
    armed = []
    for leg in trade.legs():
        saved = snap["legs"].get(leg.name)
        if saved is None:
            continue
        leg.fired, leg.filled, leg.inflight, leg.level_x = (saved["fired"], exact(saved["filled"]),
                                                            exact(saved["inflight"]), saved["level_x"])
        if saved["armed"] and leg.level_x is not None:
            armed.append(leg.name)
    return armed


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
    avg = exact(snap["entry_avg"])
    trade.entry_cost = avg * trade.entry_filled
    trade.exit_proceeds = trade.sign * exact(snap["realized"]) + avg * trade.exited
