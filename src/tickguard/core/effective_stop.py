"""The effective protective stop of a trade: the one place it is computed.

A trade's stop has up to three components in signed price space (see ``exit_rules``): the stop-loss level
(ratcheted unless the rule allows loosening), the trailing level and the break-even level.  The effective
stop is the tightest of them - the highest in signed space.  The tick path (which level goes into the
trigger book), the priority sort (distance to stop), the live view, reports and the journal snapshot all
ask this module, so they can never disagree about where a trade is protected.
"""

from __future__ import annotations

from dataclasses import dataclass

STOP_LOSS = "stop_loss"
TRAILING_STOP = "trailing_stop"
BREAK_EVEN = "break_even"


@dataclass(slots=True, frozen=True)
class EffectiveStop:
    """Where the trade is protected now (signed space) and which rule put the stop there."""

    level_x: int  # signed grid units (price_grid)
    rule: str


def stop_level(base_x: int | None, trail_x: int | None, be_x: int | None) -> int | None:
    """The tightest component's level - the highest in signed space - or None when no component is armed (for a
    reader that needs the level alone: no ``EffectiveStop`` is made)."""
    level = base_x
    for x in (trail_x, be_x):
        if x is not None and (level is None or x > level):
            level = x
    return level


def effective_stop(base_x: int | None, trail_x: int | None, be_x: int | None) -> EffectiveStop | None:
    """The tightest component (``stop_level``), or None when no component is armed.

    On a tie the rule reported is the one that moved the stop last in a trade's life: break-even over
    trailing over the initial stop-loss - what a trader reading the exit reason expects.
    """
    level = stop_level(base_x, trail_x, be_x)
    if level is None:
        return None
    rule = BREAK_EVEN if be_x == level else TRAILING_STOP if trail_x == level else STOP_LOSS
    return EffectiveStop(level, rule)


def stop_distance(price_x: int, stop_x: int, atr_units: float) -> float:
    """Distance to stop in ATR: (signed price - stop) / ATR, all three in grid units.  Small means about to be
    stopped out; negative means through it.  The batch priority and the live view's column are both this
    number (a ranking, never a trigger decision: a float is fine here)."""
    return (price_x - stop_x) / atr_units
