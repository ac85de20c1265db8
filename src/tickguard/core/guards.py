"""Per-symbol guards: the raw prices beyond which a tick can change anything for a symbol.

A tick whose bid, ask, last and mid all lie strictly inside its symbol's guard crosses no level, sets no
new best for a moving stop and touches no trail group, so the tick handler may skip it.  That is what
lets batch mode pass over most ticks of a storm with a few comparisons and still miss none that matters.
The guard is derived from the ends of the trigger book and of the moving-stop index, cached per symbol,
and dropped whenever either changes (``invalidate``), which also tells the tick handler's copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tickguard.core.model import Tick, TriggerSource
from tickguard.core.price_grid import FAR
from tickguard.core.trigger_book import LevelKind, TriggerBook

_INF = FAR


@dataclass(slots=True, frozen=True)
class Guard:
    """Open interval per price source, in grid units: a price at or beyond either end may matter."""

    bid_low: int = -_INF
    bid_high: int = _INF
    ask_low: int = -_INF
    ask_high: int = _INF
    last_low: int = -_INF
    last_high: int = _INF
    mid_low: int = -_INF
    mid_high: int = _INF

    @property
    def watches_last_or_mid(self) -> bool:
        """Only a few trades watch last or mid: when none does, the tick path skips those two checks."""
        return any(-_INF < x < _INF for x in (self.last_low, self.last_high, self.mid_low, self.mid_high))

    def last_or_mid_crosses(self, tick: Tick) -> bool:
        last = tick.last  # 0: no last in this tick
        mid = (tick.bid + tick.ask) >> 1  # exact: see Tick.price
        return ((last != 0 and (last <= self.last_low or last >= self.last_high))
                or mid <= self.mid_low or mid >= self.mid_high)


EndsOf = Callable[[str], list[tuple[TriggerSource, int, int]]]


class GuardCache:
    def __init__(self, book: TriggerBook, following_ends: EndsOf) -> None:
        self._book = book
        self._following_ends = following_ends
        self._cache: dict[str, Guard] = {}
        self.listener: Callable[[str], None] | None = None  # the tick handler drops its copy

    def invalidate(self, symbol: str) -> None:
        self._cache.pop(symbol, None)
        if self.listener is not None:
            self.listener(symbol)

    def guard(self, symbol: str) -> Guard:
        g = self._cache.get(symbol)
        if g is None:
            g = self._cache[symbol] = self._compute(symbol)
        return g

    def _compute(self, symbol: str) -> Guard:
        low = dict.fromkeys(TriggerSource, -_INF)
        high = dict.fromkeys(TriggerSource, _INF)
        for (source, sign, kind), book in self._book.books(symbol).items():
            if not book:
                continue
            # In signed space a stop fires at x <= level and a target at x >= level; a short's x is -price.
            edge = book[-1][0] if kind is LevelKind.STOP else book[0][0]
            if (sign > 0) == (kind is LevelKind.STOP):
                low[source] = max(low[source], sign * edge)
            else:
                high[source] = min(high[source], sign * edge)
        for source, sign, best_x in self._following_ends(symbol):
            # a signed price above the lowest best moves a stop
            if sign > 0:
                high[source] = min(high[source], best_x)
            else:
                low[source] = max(low[source], -best_x)
        bid, ask, last, mid = TriggerSource.BID, TriggerSource.ASK, TriggerSource.LAST, TriggerSource.MID
        return Guard(low[bid], high[bid], low[ask], high[ask], low[last], high[last], low[mid], high[mid])
