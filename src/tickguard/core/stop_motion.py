"""Stops that move: trailing and break-even stops follow the best price since entry.

``StopTracker`` owns everything about a trade's protective stop after entry: its components (stop-loss,
trailing, break-even) and where the effective one sits in the trigger book, the index of trades whose stop
moves with new best prices, and the trail groups.  It tells the trade manager when a move put the stop
through the price, and the manager fires; it never sends anything itself.

Why an index sorted by best price: a new high of a symbol must visit only the trades whose best it
actually raises, so a trending market costs O(log n + k) per tick, not O(trades).  Why trail groups:
trailing stops that are in step with the symbol's running best share one mark, so even those k vanish
(see ``trail_groups``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from sortedcontainers import SortedList

from tickguard.core.effective_stop import (
    STOP_LOSS,
    TRAILING_STOP,
    EffectiveStop,
    effective_stop,
    stop_distance,
    stop_level,
)
from tickguard.core.exit_rules import BreakEven, StopLoss, StopMotion, TrailingStop, stop_motion, stop_x
from tickguard.core.model import Tick, TriggerInfo, TriggerSource
from tickguard.core.price_grid import FAR, PriceGrid
from tickguard.core.trades import Trade, TradeRequest
from tickguard.core.trail_groups import Marks, TrailGroups
from tickguard.core.trigger_book import LevelKind, TriggerBook
from tickguard.core.volatility import VolSnapshot

FollowKey = tuple[TriggerSource, int]  # (price source, sign)
_NONE: frozenset[str] = frozenset()


class StopTracker:
    def __init__(
        self,
        book: TriggerBook,
        volatility: Callable[[str], VolSnapshot | None],
        trade_of: Callable[[int], Trade],
        on_change: Callable[[str], None],
        grid: Callable[[str], PriceGrid],
    ) -> None:
        self._book = book
        self._vol = volatility
        self._grid = grid
        self._trade_of = trade_of  # level id of a stop leg -> its trade
        self._on_change = on_change  # told the symbol whenever what its guards depend on changes
        self.groups = TrailGroups(on_change)
        # Trades whose stop follows the best price (trailing, or break-even not yet armed), per symbol and
        # (source, sign), as (best_x, level id) sorted by best.
        self._following: dict[str, dict[FollowKey, SortedList]] = {}
        self.moved: set[str] = set()  # trades whose stop moved since the journal last looked

    # ---------------------------------------------------------------------------------------- reading

    def trail_x(self, trade: Trade) -> int | None:
        """The trailing component now: the group's level while the trade is in a trail group."""
        if trade.grouped and trade.stop is not None:
            return self.groups.level_x(trade.stop.level_id)
        return trade.trail_x

    def best_x(self, trade: Trade) -> int:
        """The best signed price since entry (a grouped trade's best is its group's mark)."""
        if trade.grouped:
            return self.groups.marks_for(trade.symbol).mark_x(trade.sign)
        return trade.best_x

    def effective(self, trade: Trade) -> EffectiveStop | None:
        """Where the trade is protected now, whichever structure holds its trailing part."""
        if trade.stop is None:
            return None
        return effective_stop(trade.stop_base_x, self.trail_x(trade), trade.be_x)

    def level_x(self, trade: Trade) -> int | None:
        """``effective(trade).level_x`` without making an ``EffectiveStop``: for a reader that only compares levels
        over every live trade (the shadow checker's look: 5,000 trades every 2 s, where the object cost a third of
        the look)."""
        if trade.stop is None:
            return None
        return stop_level(trade.stop_base_x, self.trail_x(trade), trade.be_x)

    def fired_rule(self, trade: Trade) -> str:
        """The rule to report when the stop level held in the trigger book fires: the effective stop's rule
        when the book holds the effective level (a tie with a trail group's level included), else the rule
        of the book's own components (a grouped trade's trail lives in its group)."""
        book = self._book_stop(trade)
        if book is None:
            return STOP_LOSS
        current = self.effective(trade)
        return current.rule if current is not None and current.level_x == book.level_x else book.rule

    def take_moved(self, symbols: Iterable[str] | None = None) -> set[str] | frozenset[str]:
        """The trades whose stop moved since the last call (for the journal's coalesced snapshots): those moved
        on the per-trade path, and every member of a trail group whose mark advanced (of ``symbols``' groups when
        given: ``TrailGroups.moved_members``)."""
        grouped = self.groups.moved_members(symbols)
        if not self.moved and not grouped:
            return _NONE  # called every engine step: no allocation when nothing moved
        moved, self.moved = self.moved, set()
        moved.update(self._trade_of(level_id).id for level_id in grouped)
        return moved

    def _book_stop(self, trade: Trade) -> EffectiveStop | None:
        return effective_stop(trade.stop_base_x, None if trade.grouped else trade.trail_x, trade.be_x)

    def marks_for(self, symbol: str) -> Marks:
        return self.groups.marks_for(symbol)

    def following_ends(self, symbol: str) -> list[tuple[TriggerSource, int, int]]:
        """(source, sign, lowest best_x) of each non-empty index of ``symbol``: a new best there moves a stop."""
        return [(source, sign, follow[0][0]) for (source, sign), follow in self._following.get(symbol, {}).items()
                if follow]

    def atr_units(self, symbol: str) -> float:
        """The symbol's ATR in grid units, for distances to stop (1 unit when no volatility is known)."""
        vol = self._vol(symbol)
        return 1.0 if vol is None else vol.atr / self._grid(symbol).approx(1)

    def distance(self, trade: Trade, tick: Tick) -> float:
        """(price - effective stop) / ATR at ``tick``; +inf without a stop or a volatility."""
        stop = self.effective(trade)
        price = 0 if trade.stop is None else tick.price(trade.stop.source)
        if stop is None or not price or self._vol(trade.symbol) is None:  # 0: no such price (no last)
            return math.inf
        return stop_distance(trade.sign * price, stop.level_x, self.atr_units(trade.symbol))

    def symbol_risk(self, tick: Tick) -> float:
        """Distance in ATR from ``tick`` to the nearest stop of its symbol, from the ends of the book and of the
        trail groups in O(1) rather than from every trade; +inf when the symbol has no stop."""
        gap = self.nearest_gap(tick)
        return math.inf if gap is None else gap / self.atr_units(tick.symbol)

    def nearest_gap(self, tick: Tick) -> int | None:
        """How far ``tick`` is above the nearest stop of its symbol (signed price - level, in units; negative:
        through it), over the booked stops and the trail groups; None when the symbol has no stop."""
        gaps = [sign * price - book[-1][0]
                for (source, sign, kind), book in self._book.books(tick.symbol).items()
                if kind is LevelKind.STOP and book and (price := tick.price(source))]
        marks = self.groups.marks.get(tick.symbol)
        if marks is not None:
            if marks.bd != FAR:
                gaps.append(tick.bid - (marks.bmark - marks.bd))
            if marks.ad != FAR:
                gaps.append(-tick.ask - (-marks.amark - marks.ad))
        return min(gaps) if gaps else None

    # -------------------------------------------------------------------------------------- placement

    def size(self, trade: Trade, vol: VolSnapshot, initial: bool, fill: bool = False) -> None:
        """(Re)size the stop's components.  After an entry ``fill`` the stop-loss is its distance from the new
        average entry, both ways; after a volatility change it never loosens unless its rule allows it.  A trail
        keeps its level and uses the new distance from the next best on; a break-even level, once armed, stays."""
        req = trade.request
        grid = self._grid(trade.symbol)
        entry_x = trade.entry_x(grid)
        sl = req.rule(StopLoss)
        if sl is not None:
            level = stop_x(sl, trade.sign, entry_x, vol, grid)
            if initial or fill or sl.allow_loosen or trade.stop_base_x is None or level > trade.stop_base_x:
                trade.stop_base_x = level
        motion = self.measure(trade, vol)
        if initial:
            trade.trail_x = motion.trail_level(trade.best_x)
        if trade.be_x is None:
            trade.be_x = motion.break_even(trade.best_x)
        self.rearm(trade)

    def measure(self, trade: Trade, vol: VolSnapshot) -> StopMotion:
        """How the trade's stop moves, sized for ``vol`` and its entry now (kept until either changes)."""
        req, grid = trade.request, self._grid(trade.symbol)
        trade.motion = stop_motion(req.rule(TrailingStop), req.rule(BreakEven), trade.entry_x(grid), vol, grid)
        trade.motion_vol = vol
        return trade.motion

    def rearm(self, trade: Trade) -> None:
        """Put the effective stop in the trigger book (its trailing part stays with the group if grouped)."""
        stop = trade.stop
        if stop is None or trade.closing:
            return
        book_stop = self._book_stop(trade)
        if book_stop is None:
            if self._book.remove(stop.level_id):
                stop.level_x = None
            return
        level = book_stop.level_x
        if stop.level_x != level or stop.level_id not in self._book:
            stop.level_x = level
            self._book.upsert(stop.level_id, trade.symbol, stop.source, trade.sign, LevelKind.STOP, level)
            self.moved.add(trade.id)

    # ----------------------------------------------------------------------------------------- motion

    def advance_symbol(self, tick: Tick) -> list[tuple[Trade, TriggerInfo]]:
        """Move every stop whose best price ``tick`` improves; returns the trades the move put through the
        price (rare: a break-even level above the market), for the manager to fire."""
        books = self._following.get(tick.symbol)
        if not books:
            return []
        crossed: list[tuple[Trade, TriggerInfo]] = []
        for (source, sign), follow in list(books.items()):
            if not follow:
                continue
            price = tick.price(source)
            x = sign * price
            if not price or follow[0][0] >= x:  # 0: no such price (no last)
                continue
            end = follow.bisect_left((x, -1))
            moved = follow[:end]
            del follow[:end]
            self._on_change(tick.symbol)
            for _, level_id in moved:
                trade = self._trade_of(level_id)
                info = self._advance(trade, x, tick)
                if info is not None:
                    crossed.append((trade, info))
                elif not self.try_group(trade) and self.is_following(trade):
                    follow.add((trade.best_x, level_id))
        return crossed

    def _advance(self, trade: Trade, x: int, tick: Tick) -> TriggerInfo | None:
        """A new best ``x`` for ``trade``: tighten its trailing and break-even components."""
        stop = trade.stop
        vol = self._vol(trade.symbol)
        if stop is None or vol is None or x <= trade.best_x:
            return None  # without volatility to size moves with, the journaled levels stand (and still fire)
        motion = trade.motion if trade.motion_vol is vol else self.measure(trade, vol)
        if motion.trail_d is None and motion.be_from is None:
            return None
        trade.best_x = x
        level = motion.trail_level(x)
        if level is not None and (trade.trail_x is None or level > trade.trail_x):
            trade.trail_x = level
        if trade.be_x is None:
            trade.be_x = motion.break_even(x)
        self.rearm(trade)
        current = self.effective(trade)
        if stop.level_x is not None and current is not None and x <= stop.level_x:
            grid = self._grid(trade.symbol)
            return TriggerInfo(current.rule, grid.price(trade.sign * stop.level_x), grid.price(trade.sign * x),
                               tick.seq, tick.ts_ns)
        return None

    def pop_group_fired(self, tick: Tick) -> list[tuple[int, TriggerInfo]]:
        """Trail-group stops that ``tick`` touched, as (level id, why); they leave their group."""
        marks = self.groups.marks.get(tick.symbol)
        if marks is None or (marks.bd == FAR and marks.ad == FAR):
            return []
        fired = []
        for sign, price in ((1, tick.bid), (-1, tick.ask)):
            for level_id, level in self.groups.pop_fired(tick.symbol, sign, sign * price):
                trade = self._trade_of(level_id)
                trade.grouped = False
                trade.trail_x = level
                grid = self._grid(tick.symbol)
                fired.append((level_id, TriggerInfo(TRAILING_STOP, grid.price(sign * level), grid.price(price),
                                                    tick.seq, tick.ts_ns)))
        return fired

    # ----------------------------------------------------------------------------------------- groups

    def try_group(self, trade: Trade) -> bool:
        """Move a trailing stop that is in step with its side's mark into the trail group."""
        stop = trade.stop
        if (trade.grouped or trade.closing or stop is None or trade.trail_x is None
                or stop.source is not (TriggerSource.BID if trade.sign > 0 else TriggerSource.ASK)):
            return False
        req = trade.request
        vol = self._vol(trade.symbol)
        if vol is None or req.rule(TrailingStop) is None or (req.rule(BreakEven) is not None and trade.be_x is None):
            return False
        motion = trade.motion if trade.motion_vol is vol else self.measure(trade, vol)
        d = motion.trail_d
        if d is None or trade.trail_x != trade.best_x - d:
            return False  # not in step (a volatility change loosened it): the per-trade path keeps it
        if not self.groups.join(stop.level_id, trade.symbol, trade.sign, trade.best_x, d):
            return False
        trade.grouped = True
        self.rearm(trade)
        return True

    def ungroup(self, trade: Trade) -> None:
        """Back to the per-trade path with the level it has now (a volatility change, a close)."""
        stop = trade.stop
        if not trade.grouped or stop is None:
            return
        level = self.groups.level_x(stop.level_id)
        self.groups.leave(stop.level_id)
        trade.grouped = False
        if level is not None:
            trade.trail_x = level
            trade.best_x = self.groups.marks_for(trade.symbol).mark_x(trade.sign)

    # ------------------------------------------------------------------------------------ following

    @staticmethod
    def is_following(trade: Trade) -> bool:
        """Does the trade's stop move with new best prices on the per-trade path?"""
        if (trade.closing or not trade.state.automated or trade.stop is None or trade.entry_filled <= 0
                or trade.grouped):
            return False
        req = trade.request
        return req.rule(TrailingStop) is not None or (req.rule(BreakEven) is not None and trade.be_x is None)

    def track(self, trade: Trade) -> None:
        """(Re)index a trade among those whose stop moves with new best prices."""
        stop = trade.stop
        if stop is None:
            return
        books = self._following.setdefault(trade.symbol, {})
        follow = books.get((stop.source, trade.sign))
        if follow is None:
            follow = books[(stop.source, trade.sign)] = SortedList()
        for entry in [e for e in follow if e[1] == stop.level_id]:
            follow.remove(entry)
        if self.is_following(trade):
            follow.add((trade.best_x, stop.level_id))
        self._on_change(trade.symbol)


def stop_source(request: TradeRequest) -> TriggerSource:
    """The price the stop leg watches: its rule's trigger, resolved for the trade's side."""
    rule = request.rule(StopLoss) or request.rule(TrailingStop)
    return TriggerSource.AUTO.resolve(request.side) if rule is None else rule.trigger.resolve(request.side)
