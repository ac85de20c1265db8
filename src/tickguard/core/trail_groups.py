"""Trail groups (pure core): trailing stops that move together, so a new high costs O(1), not O(trails).

A trailing stop whose best price equals its symbol side's *mark* (the running best of the bid for long
trades, of the ask for shorts) has level = mark - d in signed price space.  All such stops of one side form
a group sorted by d: the mark advances with one comparison per tick (the tick handler does it), and a
pull-back fires exactly the stops with x <= mark - d, smallest d first.  Stops that are not in step with the
mark (not yet active, break-even pending, loosened by a volatility change, entered below an old high)
stay on the trade manager's per-trade path until their best reaches the mark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sortedcontainers import SortedList

from tickguard.core.price_grid import FAR


class Marks:
    """Per symbol: the group marks (raw prices, grid units) and the smallest distance in each group, shared
    with the tick handler so the per-tick check is a subtraction and a comparison.  ``FAR`` stands for
    "none": an empty group's distance, a mark before any quote."""

    __slots__ = ("ad", "amark", "bd", "bmark")

    def __init__(self) -> None:
        self.bmark = -FAR  # running best bid of the long group
        self.amark = FAR  # running best (lowest) ask of the short group
        self.bd = FAR  # smallest trail distance in the long group (FAR: empty)
        self.ad = FAR

    def observe(self, bid: int, ask: int) -> None:
        if bid > self.bmark:
            self.bmark = bid
        if ask < self.amark:
            self.amark = ask

    def mark_x(self, sign: int) -> int:
        return self.bmark if sign > 0 else -self.amark


class TrailGroups:
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.marks: dict[str, Marks] = {}
        self._groups: dict[tuple[str, int], SortedList] = {}
        self._where: dict[int, tuple[str, int, int]] = {}
        self._seen: dict[tuple[str, int], int] = {}  # each group's mark when ``moved_members`` last looked
        self._on_change = on_change

    def __contains__(self, level_id: int) -> bool:
        return level_id in self._where

    def marks_for(self, symbol: str) -> Marks:
        m = self.marks.get(symbol)
        if m is None:
            m = self.marks[symbol] = Marks()
        return m

    def join(self, level_id: int, symbol: str, sign: int, best_x: int, d: int) -> bool:
        """Add a trailing stop whose level is best_x - d; refused unless best_x is the group's mark (an
        empty group takes the stop's best as its mark)."""
        group = self._groups.get((symbol, sign))
        m = self.marks_for(symbol)
        if not group:
            if sign > 0:
                m.bmark = best_x
            else:
                m.amark = -best_x
            group = self._groups[(symbol, sign)] = SortedList()
        elif m.mark_x(sign) != best_x:
            return False
        group.add((d, level_id))
        self._where[level_id] = (symbol, sign, d)
        self._update(symbol, sign)
        return True

    def moved_members(self, symbols: Iterable[str] | None = None) -> list[int]:
        """Level ids of the stops whose group's mark moved since the last call: their levels moved with it
        (the tick handler advances marks without telling anyone, so the journal asks here).  ``symbols``: look at
        these symbols' groups only - the ones that had ticks (a mark moves only with a tick); None: every group.
        Why: the engine asks every step, and a scan of every group was a cost per step that grew with symbols."""
        out: list[int] = []
        groups = self._groups
        if not groups:
            return out  # asked every engine step: nothing built when no trailing stop is grouped
        keys: Iterable[tuple[str, int]] = (
            groups if symbols is None else [k for s in set(symbols) for k in ((s, 1), (s, -1)) if k in groups])
        for key in keys:
            group = groups[key]
            if group:
                mark = self.marks_for(key[0]).mark_x(key[1])
                if self._seen.get(key) != mark:
                    self._seen[key] = mark
                    out.extend(level_id for _, level_id in group)
        return out

    def leave(self, level_id: int) -> bool:
        where = self._where.pop(level_id, None)
        if where is None:
            return False
        symbol, sign, d = where
        self._groups[(symbol, sign)].remove((d, level_id))
        self._update(symbol, sign)
        return True

    def level_x(self, level_id: int) -> int | None:
        where = self._where.get(level_id)
        if where is None:
            return None
        symbol, sign, d = where
        return self.marks_for(symbol).mark_x(sign) - d

    def pop_fired(self, symbol: str, sign: int, x: int) -> list[tuple[int, int]]:
        """Remove and return (level id, level) of every stop of the group with x <= mark - d."""
        group = self._groups.get((symbol, sign))
        if not group:
            return []
        mark = self.marks_for(symbol).mark_x(sign)
        fired = []
        while group and x <= mark - group[0][0]:
            d, level_id = group.pop(0)
            del self._where[level_id]
            fired.append((level_id, mark - d))
        if fired:
            self._update(symbol, sign)
        return fired

    def _update(self, symbol: str, sign: int) -> None:
        group = self._groups.get((symbol, sign))
        m = self.marks_for(symbol)
        d = group[0][0] if group else FAR
        if sign > 0:
            m.bd = d
        else:
            m.ad = d
        self._on_change(symbol)
