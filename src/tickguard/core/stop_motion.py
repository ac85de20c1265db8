"""How protective stops move (pure core, part of the trade manager): trailing and break-even stops
following new best prices, trail groups, and the per-symbol guards the tick handler uses to skip ticks.

Kept apart from the lifecycle in ``trade_manager.py`` because it is the tick path's inner loop and has
invariants of its own: a stop only tightens, a grouped trail's level is its side's mark minus its
distance, and a guard is never narrower than the nearest thing a tick could change.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sortedcontainers import SortedList

from tickguard.core.exit_rules import BreakEven, StopLoss, TrailingStop, break_even_x, trail_x
from tickguard.core.model import Tick, TriggerInfo, TriggerSource
from tickguard.core.tick_handler import SignedView
from tickguard.core.trades import QTY_EPS, Leg, Trade, TradeRequest
from tickguard.core.trail_groups import Marks, TrailGroups
from tickguard.core.trigger_book import LevelKind, TriggerBook
from tickguard.core.volatility import VolSnapshot


class StopMotion:
    """Mixin of ``TradeManager``: the state it relies on is created there."""

    book: TriggerBook
    trail_groups: TrailGroups
    guards: dict[str, tuple[float, ...]]
    guard_listener: Callable[[str], None] | None
    moved: set[str]
    _dyn: dict[str, dict[tuple[TriggerSource, int], SortedList]]
    _legs: dict[int, tuple[Trade, Leg]]
    _vol: Callable[[str], VolSnapshot | None]
    _fire_terminal: Callable[[Trade, Leg, TriggerInfo], None]

    def _advance_stop(self, trade: Trade, view: SignedView) -> None:
        req = trade.request
        trail = req.rule(TrailingStop)
        be = req.rule(BreakEven)
        if trail is None and be is None:
            return
        stop = trade.stop
        assert stop is not None
        vol = self._vol(trade.symbol)
        if vol is None:
            return  # no volatility to size moves with: the journaled levels stand, and still fire
        was_trailing = trade.trail_x is not None
        # A pull-back inside the batch at least as deep as the trail distance touched the trailing stop.
        if was_trailing and trail is not None:
            dist = trail.distance * _unit(trail.unit, vol)
            if view.pullback_x >= dist and view.pullback_seq >= 0:
                level = math.nan if trade.stop_price is None else trade.stop_price
                self._fire_terminal(
                    trade, stop, TriggerInfo("trailing_stop", level, math.nan, view.pullback_seq, view.last_ts)
                )
                return
        if view.high_x <= trade.best_x:
            return
        trade.best_x = view.high_x
        if trail is not None:
            level = trail_x(trail, trade.sign, trade.entry_avg, trade.best_x, vol.atr, vol.adr)
            if level is not None and (trade.trail_x is None or level > trade.trail_x):
                trade.trail_x = level
        if be is not None and trade.be_x is None:
            trade.be_x = break_even_x(be, trade.sign, trade.entry_avg, trade.best_x, vol.atr, vol.adr)
        self._rearm_stop(trade)
        if stop.level_x is not None and view.last_x <= stop.level_x:
            info = TriggerInfo(_stop_rule(trade), trade.sign * stop.level_x, trade.sign * view.last_x,
                               view.last_seq, view.last_ts)
            self._fire_terminal(trade, stop, info)


    # ------------------------------------------------------------------------------------------- guards

    def _invalidate(self, symbol: str) -> None:
        self.guards.pop(symbol, None)
        if self.guard_listener is not None:
            self.guard_listener(symbol)

    def _try_group(self, trade: Trade) -> bool:
        """Move a trailing stop that is in step with its side's mark into the trail group."""
        stop = trade.stop
        if (trade.grouped or trade.closing or stop is None or trade.trail_x is None
                or stop.source is not (TriggerSource.BID if trade.sign > 0 else TriggerSource.ASK)):
            return False
        req = trade.request
        trail = req.rule(TrailingStop)
        if trail is None or (req.rule(BreakEven) is not None and trade.be_x is None):
            return False
        vol = self._vol(trade.symbol)
        if vol is None:
            return False
        d = trail.distance * _unit(trail.unit, vol)
        if trade.trail_x != trade.best_x - d:
            return False  # not in step (a volatility change loosened it): the per-trade path keeps it
        if not self.trail_groups.join(stop.level_id, trade.symbol, trade.sign, trade.best_x, d):
            return False
        trade.grouped = True
        level_id = stop.level_id
        trade.group_level = lambda: self.trail_groups.level_x(level_id)
        self._rearm_stop(trade)
        return True

    def _ungroup(self, trade: Trade) -> None:
        """Back to the per-trade path with the level it has now (a volatility change, a close)."""
        stop = trade.stop
        if not trade.grouped or stop is None:
            return
        level = self.trail_groups.level_x(stop.level_id)
        self.trail_groups.leave(stop.level_id)
        trade.grouped = False
        if level is not None:
            trade.trail_x = level
            trade.best_x = self.trail_groups.marks_for(trade.symbol).mark_x(trade.sign)

    def effective_trail_x(self, trade: Trade) -> float | None:
        if trade.grouped and trade.stop is not None:
            return self.trail_groups.level_x(trade.stop.level_id)
        return trade.trail_x

    def marks_for(self, symbol: str) -> Marks:
        return self.trail_groups.marks_for(symbol)

    @staticmethod
    def _is_dynamic(trade: Trade) -> bool:
        if trade.closing or trade.state.is_final or trade.stop is None or trade.entry_filled <= QTY_EPS:
            return False
        if trade.grouped:
            return False
        req = trade.request
        return req.rule(TrailingStop) is not None or (req.rule(BreakEven) is not None and trade.be_x is None)

    def _track_dynamic(self, trade: Trade) -> None:
        """(Re)index a trade among those whose stop moves with new best prices."""
        stop = trade.stop
        if stop is None:
            return
        books = self._dyn.setdefault(trade.symbol, {})
        dyn = books.get((stop.source, trade.sign))
        if dyn is None:
            dyn = books[(stop.source, trade.sign)] = SortedList()
        for entry in [e for e in dyn if e[1] == stop.level_id]:
            dyn.remove(entry)
        if self._is_dynamic(trade):
            dyn.add((trade.best_x, stop.level_id))
        self._invalidate(trade.symbol)

    def guard(self, symbol: str) -> tuple[float, ...]:
        """Raw prices beyond which a tick of ``symbol`` can change anything: (bid_lo, bid_hi, ask_lo,
        ask_hi, last_lo, last_hi, mid_lo, mid_hi, other_sources).  A tick with lo < price < hi on every
        source crosses no level and sets no new best, so it needs no evaluation - that is what lets the
        tick handler skip most ticks of a storm without missing one that matters."""
        g = self.guards.get(symbol)
        if g is not None:
            return g
        lo = {s: -math.inf for s in _RAW_SOURCES}
        hi = {s: math.inf for s in _RAW_SOURCES}
        for (source, sign, kind), book in self.book.books(symbol).items():
            if not book:
                continue
            if sign > 0:
                if kind is LevelKind.STOP:
                    lo[source] = max(lo[source], book[-1][0])
                else:
                    hi[source] = min(hi[source], book[0][0])
            elif kind is LevelKind.STOP:
                hi[source] = min(hi[source], -book[-1][0])
            else:
                lo[source] = max(lo[source], -book[0][0])
        for (source, sign), dyn in self._dyn.get(symbol, {}).items():
            if dyn:
                if sign > 0:
                    hi[source] = min(hi[source], dyn[0][0])
                else:
                    lo[source] = max(lo[source], -dyn[0][0])
        other = any(math.isfinite(lo[s]) or math.isfinite(hi[s]) for s in (TriggerSource.LAST, TriggerSource.MID))
        g = (lo[TriggerSource.BID], hi[TriggerSource.BID], lo[TriggerSource.ASK], hi[TriggerSource.ASK],
             lo[TriggerSource.LAST], hi[TriggerSource.LAST], lo[TriggerSource.MID], hi[TriggerSource.MID],
             float(other))
        self.guards[symbol] = g
        return g

    def symbol_risk_at(self, symbol: str, tick: Tick) -> float:
        """Distance to the nearest stop in ATR at ``tick`` (negative once through it): the batch priority,
        from the book's ends in O(1) rather than from every trade."""
        vol = self._vol(symbol)
        atr = vol.atr if vol is not None else 1.0
        best = math.inf
        for (source, sign, kind), book in self.book.books(symbol).items():
            if kind is LevelKind.STOP and book:
                d = (sign * tick.price(source) - book[-1][0]) / atr
                if d < best:
                    best = d
        return best

    def _rearm_stop(self, trade: Trade) -> None:
        """Effective stop = the tightest of its components; it is (re)placed in the book."""
        stop = trade.stop
        if stop is None or trade.closing:
            return
        trail = None if trade.grouped else trade.trail_x
        parts = [x for x in (trade.stop_base_x, trail, trade.be_x) if x is not None]
        if not parts:
            if self.book.remove(stop.level_id):
                stop.level_x = None
            return
        level = max(parts)
        if stop.level_x != level or stop.level_id not in self.book:
            stop.level_x = level
            self.book.upsert(stop.level_id, trade.symbol, stop.source, trade.sign, LevelKind.STOP, level)
            self.moved.add(trade.id)


_RAW_SOURCES = (TriggerSource.BID, TriggerSource.ASK, TriggerSource.LAST, TriggerSource.MID)


def _stop_source(request: TradeRequest) -> TriggerSource:
    rule = request.rule(StopLoss) or request.rule(TrailingStop)
    return TriggerSource.AUTO.resolve(request.side) if rule is None else rule.trigger.resolve(request.side)


def _stop_rule(trade: Trade) -> str:
    stop = trade.stop
    assert stop is not None and stop.level_x is not None
    if trade.be_x is not None and stop.level_x == trade.be_x:
        return "break_even"
    if trade.trail_x is not None and stop.level_x == trade.trail_x:
        return "trailing_stop"
    return "stop_loss"


def _unit(unit: str, vol: VolSnapshot) -> float:
    return vol.atr if unit == "atr" else vol.adr if unit == "adr" else 1.0
