"""Trade snapshots for the journal and their restoration after a restart (part of the trade manager).

A snapshot holds everything about a trade that ticks have shaped - best price, trailing and break-even
levels, leg counters - because ticks are not journaled and a restart must not forget them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from tickguard.core.model import TradeState, TriggerInfo
from tickguard.core.trades import QTY_EPS, Leg, Trade, TradeRequest
from tickguard.core.trail_groups import TrailGroups
from tickguard.core.trigger_book import LevelKind, TriggerBook


class Snapshots:
    """Mixin of ``TradeManager``: the state it relies on is created there."""

    book: TriggerBook
    trail_groups: TrailGroups
    _ids: itertools.count
    _clock: Callable[[], int]
    _new_trade: Callable[[str, TradeRequest, int], Trade]
    _timer: Callable[[int, str, str], None]
    _track_dynamic: Callable[[Trade], None]
    effective_trail_x: Callable[[Trade], float | None]
    _fire_terminal: Callable[[Trade, Leg, TriggerInfo], None]

    def snapshot(self, trade: Trade) -> dict[str, Any]:
        """Everything about a trade that ticks have shaped and a restart must not forget."""
        return {
            "state": trade.state.value, "entry_working": trade.entry_working, "entry_filled": trade.entry_filled,
            "entry_avg": trade.entry_avg, "entry_ts_ns": trade.entry_ts_ns, "exited": trade.exited,
            "realized": trade.realized, "commissions": trade.commissions,
            "best_x": _num(self.trail_groups.marks_for(trade.symbol).mark_x(trade.sign) if trade.grouped
                           else trade.best_x),
            "stop_base_x": trade.stop_base_x, "trail_x": self.effective_trail_x(trade), "be_x": trade.be_x,
            "time_deadline_ns": trade.time_deadline_ns, "closing": trade.closing,
            "close_reason": trade.close_reason, "reason": trade.reason,
            "legs": {leg.name: {"fired": leg.fired, "filled": leg.filled, "inflight": leg.inflight,
                                "level_x": leg.level_x, "armed": leg.level_id in self.book}
                     for leg in trade.legs()},
        }

    def restore(self, trade_id: str, request: TradeRequest, snap: dict[str, Any], created_ns: int) -> Trade:
        """Rebuild a trade from its journaled snapshot: levels back in the book, timers re-armed."""
        trade = self._new_trade(trade_id, request, created_ns)
        trade.state = TradeState(snap["state"])
        for name in ("entry_working", "entry_filled", "entry_avg", "entry_ts_ns", "exited", "realized",
                     "commissions", "stop_base_x", "trail_x", "be_x", "time_deadline_ns", "closing",
                     "close_reason", "reason"):
            setattr(trade, name, snap[name])
        trade.best_x = -math.inf if snap["best_x"] is None else snap["best_x"]
        trade.entry_key = f"tg:{trade_id}:entry"
        for leg in trade.legs():
            saved = snap["legs"].get(leg.name)
            if saved is None:
                continue
            leg.fired, leg.filled, leg.inflight, leg.level_x = (saved["fired"], saved["filled"], saved["inflight"],
                                                                saved["level_x"])
            if saved["armed"] and leg.level_x is not None and not trade.closing:
                kind = LevelKind.STOP if leg.terminal else LevelKind.TARGET
                self.book.upsert(leg.level_id, trade.symbol, leg.source, trade.sign, kind, leg.level_x)
        if trade.time_deadline_ns is not None and not trade.closing:
            self._timer(trade.time_deadline_ns, trade_id, "time_stop")
        self._track_dynamic(trade)
        if trade.entry_working and request.entry_timeout_s is not None:
            self._timer(created_ns + int(request.entry_timeout_s * 1e9), trade_id, "entry_timeout")
        number = "".join(ch for ch in trade_id if ch.isdigit())
        if number:
            self.reserve_ids(int(number))
        return trade

    def reserve_ids(self, highest: int) -> None:
        """Never hand out a trade id at or below ``highest`` (ids already used in the journal)."""
        current = next(self._ids)
        self._ids = itertools.count(max(current, highest + 1))

    def resume_closing(self, trade: Trade) -> None:
        """After a restart: a trade that was closing with nothing in flight gets its exit sent again."""
        if trade.closing and not trade.state.is_final and trade.inflight <= QTY_EPS and trade.open_qty > QTY_EPS:
            leg = trade.stop or trade.time_leg or (trade.targets[0] if trade.targets else None)
            if leg is not None:
                self._fire_terminal(trade, leg, TriggerInfo(trade.close_reason, math.nan, math.nan, -1,
                                                            self._clock()))


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None
