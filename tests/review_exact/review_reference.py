"""Reviewer's own exact reference of the README contract ("Prices and rounding"), in Fraction prices.

Written from the contract text only.  Signed space: x = s * price.  Per tick and per live trade:
1. the stop (the tightest of stop-loss / trailing / break-even as they stand) fires if x_stop <= level;
2. each unfired target fires if x_target >= level (not after the stop fired);
3. a new best on the stop's source moves the trail (level = best - d onto the grid, tighter; only tightens;
   only once best - entry >= activate_after) and arms the break-even (best - entry >= after); a stop that
   move put at or above x fires on that tick.
Distances: whole ticks, rounded down, at least one (activate_after: at least zero).
Volatility change: stop-loss re-sized only if tighter (unless allow_loosen), targets re-sized, the trail keeps
its level and uses the new distance from the next best, a break-even arms if best - entry already reaches it.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction as F


def dec(v) -> F:
    return F(Decimal(repr(v))) if isinstance(v, float) else F(v)


class RefTrade:
    def __init__(self, tick: Decimal, side: str, rules: list, atr: float):
        self.t = F(tick)
        self.s = 1 if side == "long" else -1
        self.atr = atr
        self.rules = {type(r).__name__: r for r in rules}
        self.targets = [r for r in rules if type(r).__name__ == "TakeProfit"]
        self.filled = F(0)
        self.cost = F(0)
        self.best = None
        self.base = self.trail = self.be = None
        self.tp_level: list[F | None] = [None] * len(self.targets)
        self.tp_fired = [False] * len(self.targets)
        self.closed = False
        self.fires: dict[str, int] = {}
        sl, tr = self.rules.get("StopLoss"), self.rules.get("TrailingStop")
        self.stop_src = (sl or tr).trigger if (sl or tr) else None

    # grid helpers (signed prices)
    def up(self, x: F) -> F:
        return math.ceil(x / self.t) * self.t

    def down(self, x: F) -> F:
        return math.floor(x / self.t) * self.t

    def dist(self, value, unit, minimum=1) -> F:
        size = F(1) if unit == "price" else F(Decimal(format(self.atr, ".12g")))  # the contract: 12 digits
        return max(minimum, math.floor(dec(value) * size / self.t)) * self.t

    @property
    def entry(self) -> F:
        return self.s * self.cost / self.filled

    def fill(self, qty: int, price: Decimal) -> None:
        first = self.filled == 0
        self.filled += qty
        self.cost += F(price) * qty
        self.best = self.s * F(price)  # the contract: moves are measured from the latest entry fill
        self._size(initial=first, fill=True)

    def set_atr(self, atr: float) -> None:
        self.atr = atr
        if self.filled and not self.closed:
            self._size(initial=False)

    def _size(self, initial: bool, fill: bool = False) -> None:
        e = self.entry
        sl = self.rules.get("StopLoss")
        if sl is not None:
            lvl = (self.s * F(Decimal(repr(sl.price))) if sl.price is not None
                   else self.up(e - self.dist(sl.distance, sl.unit)))
            # after a fill: the distance from the new average, both ways; a volatility change only tightens it
            if initial or fill or sl.allow_loosen or self.base is None or lvl > self.base:
                self.base = lvl
        for i, tp in enumerate(self.targets):
            self.tp_level[i] = (self.s * F(Decimal(repr(tp.price))) if tp.price is not None
                                else self.down(e + self.dist(tp.distance, tp.unit)))
        if initial:
            self._trail_at(self.best)
        self._be_at(self.best)

    def _trail_at(self, best: F) -> None:
        tr = self.rules.get("TrailingStop")
        if tr is None:
            return
        if tr.activate_after is not None and best - self.entry < self.dist(tr.activate_after, tr.unit, minimum=0):
            return
        lvl = self.up(best - self.dist(tr.distance, tr.unit))
        if self.trail is None or lvl > self.trail:
            self.trail = lvl

    def _be_at(self, best: F) -> None:
        be = self.rules.get("BreakEven")
        if be is None or self.be is not None:
            return
        if best - self.entry >= self.dist(be.after, be.unit):
            self.be = self.up(self.entry + self.s * 0 + dec(be.offset))

    def stop_level(self) -> F | None:
        parts = [p for p in (self.base, self.trail, self.be) if p is not None]
        return max(parts) if parts else None

    def _fire_stop(self, seq: int) -> None:
        self.closed = True
        if not self.targets or not all(self.tp_fired):  # something left to exit
            self.fires.setdefault("stop", seq)

    def on_tick(self, seq: int, prices: dict[str, F | None]) -> None:
        if self.filled == 0 or self.closed:
            return
        src = self.stop_src
        xs = None
        if src is not None:
            p = prices[_resolve(src, self.s)]
            xs = None if p is None else self.s * p
            lvl = self.stop_level()
            if xs is not None and lvl is not None and xs <= lvl:
                self._fire_stop(seq)
                return
        for i, tp in enumerate(self.targets):
            p = prices[_resolve(tp.trigger, self.s)]
            if not self.tp_fired[i] and p is not None and self.s * p >= self.tp_level[i]:
                self.tp_fired[i] = True
                self.fires.setdefault(f"tp{i + 1}", seq)
        if xs is not None and xs > self.best and ("TrailingStop" in self.rules or
                                                  ("BreakEven" in self.rules and self.be is None)):
            self.best = xs
            self._trail_at(xs)
            self._be_at(xs)
            lvl = self.stop_level()
            if lvl is not None and xs <= lvl:
                self._fire_stop(seq)


def _resolve(src, s: int) -> str:
    v = getattr(src, "value", src)
    if v == "auto":
        return "bid" if s > 0 else "ask"
    return v


def prices_of(bid: Decimal, ask: Decimal, last: Decimal | None) -> dict[str, F | None]:
    return {"bid": F(bid), "ask": F(ask), "last": None if last is None else F(last), "mid": (F(bid) + F(ask)) / 2}
