"""The trigger book (pure core): per-symbol sorted levels answering "which levels did [low, high] cross?".

Levels are integers in grid units (``price_grid``) and live in signed price space (see exit_rules), so one
structure per (symbol, price source, sign, kind) suffices: STOP levels fire when the signed price falls to them
(all levels >= low), TARGET levels when it rises to them (all levels <= high).  Both are a bisection plus a
walk over the k crossed levels: O(log n + k), independent of how many levels do *not* cross — the property
the tick path relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from sortedcontainers import SortedList

from tickguard.core.model import TriggerSource

BookKey = tuple[TriggerSource, int, "LevelKind"]
_AFTER_ANY_ID = 1 << 62  # sorts after every level id


class LevelKind(IntEnum):
    STOP = 0  # fires when signed price <= level
    TARGET = 1  # fires when signed price >= level


class TriggerBook:
    """Holds live levels by id.  Crossed levels are removed as they are reported, so none is reported twice."""

    __slots__ = ("_by_symbol", "_where", "on_change")

    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        self._by_symbol: dict[str, dict[BookKey, SortedList]] = {}
        self._where: dict[int, tuple[str, BookKey, int]] = {}
        self.on_change = on_change  # told the symbol whenever its levels change (guards are cached on it)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, level_id: int) -> bool:
        return level_id in self._where

    def level_of(self, level_id: int) -> int | None:
        where = self._where.get(level_id)
        return None if where is None else where[2]

    def upsert(
        self, level_id: int, symbol: str, source: TriggerSource, sign: int, kind: LevelKind, level_x: int
    ) -> None:
        """Add a level, or move it (a moving trailing stop is a remove + insert, both O(log n))."""
        if type(level_x) is not int:  # a float here is a price that skipped the grid: refuse it loudly
            raise TypeError(f"level {level_id} for {symbol}: not grid units ({level_x!r})")
        self.remove(level_id)
        key: BookKey = (source, sign, kind)
        books = self._by_symbol.setdefault(symbol, {})
        book = books.get(key)
        if book is None:
            book = books[key] = SortedList()
        book.add((level_x, level_id))
        self._where[level_id] = (symbol, key, level_x)
        if self.on_change is not None:
            self.on_change(symbol)

    def remove(self, level_id: int) -> bool:
        where = self._where.pop(level_id, None)
        if where is None:
            return False
        symbol, key, level_x = where
        self._by_symbol[symbol][key].remove((level_x, level_id))
        if self.on_change is not None:
            self.on_change(symbol)
        return True

    def sources(self, symbol: str) -> list[tuple[TriggerSource, int]]:
        """The (price source, sign) pairs that have live levels for ``symbol``."""
        books = self._by_symbol.get(symbol)
        if not books:
            return []
        out: list[tuple[TriggerSource, int]] = []  # in booking order, so firing order is stable (a plain loop:
        for key, book in books.items():  # the fastest way for the handful of keys a symbol has)
            if book:
                pair = (key[0], key[1])
                if pair not in out:
                    out.append(pair)
        return out

    def pop_crossed(
        self, symbol: str, source: TriggerSource, sign: int, low_x: int, high_x: int
    ) -> list[int]:
        """Remove and return every level crossed by a signed price range [low_x, high_x].

        Stops come first (highest, i.e. first touched, first), then targets (lowest first).
        """
        books = self._by_symbol.get(symbol)
        if not books:
            return []
        fired: list[int] = []
        stops = books.get((source, sign, LevelKind.STOP))
        if stops and low_x <= stops[-1][0]:
            # one level crossed, the usual case: popped - a quarter to half of the slice's cost at 250-5,000 levels;
            # popping one by one is far slower for a gap through many, so those keep the slice
            if len(stops) == 1 or stops[-2][0] < low_x:
                level_id = stops.pop()[1]
                del self._where[level_id]
                fired.append(level_id)
            else:
                start = stops.bisect_left((low_x, -1))
                crossed = stops[start:]
                del stops[start:]
                for _, level_id in reversed(crossed):
                    del self._where[level_id]
                    fired.append(level_id)
        targets = books.get((source, sign, LevelKind.TARGET))
        if targets and high_x >= targets[0][0]:
            end = targets.bisect_right((high_x, _AFTER_ANY_ID))
            crossed = targets[:end]
            del targets[:end]
            for _, level_id in crossed:
                del self._where[level_id]
                fired.append(level_id)
        if fired and self.on_change is not None:
            self.on_change(symbol)
        return fired

    def symbols(self) -> list[str]:
        """The symbols with live levels (a copy)."""
        return [symbol for symbol, books in self._by_symbol.items() if any(books.values())]

    def nearest_stop(self, symbol: str) -> tuple[int, TriggerSource, int] | None:
        """The stop of ``symbol``'s that a move against its trades reaches first - (level id, price source, sign) - or
        None: the highest signed level of its stop books (between books of both signs, a long's: signed levels of
        longs are positive - the exit rehearsal needs a stop that is booked, not the one nearest the price)."""
        best: tuple[int, int, TriggerSource, int] | None = None
        for (source, sign, kind), book in self._by_symbol.get(symbol, {}).items():
            if kind is LevelKind.STOP and book and (best is None or book[-1][0] > best[0]):
                best = (book[-1][0], book[-1][1], source, sign)
        return None if best is None else best[1:]

    def books(self, symbol: str) -> dict[BookKey, SortedList]:
        """The symbol's sorted books, for guard computation (read only)."""
        return self._by_symbol.get(symbol, {})
