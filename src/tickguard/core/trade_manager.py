"""Trade lifecycle and exit evaluation (pure core: no I/O, no asyncio).

The manager owns the trades, arms their legs in the trigger book, decides on each batch which legs fire,
and puts the resulting ``OrderIntent``s in ``outbox`` for the executor.  It learns what happened to them
through ``on_fill`` / ``on_intent_closed``.  State: pending_entry -> open -> exiting -> closed (or
rejected / cancelled).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

from sortedcontainers import SortedList

from tickguard.core.exit_rules import (
    BreakEven,
    StopLoss,
    TakeProfit,
    TimeStop,
    TrailingStop,
    break_even_x,
    stop_x,
    target_x,
    trail_x,
)
from tickguard.core.model import (
    OrderIntent,
    OrderType,
    PriorityClass,
    Tick,
    TradeState,
    TriggerInfo,
    TriggerSource,
)
from tickguard.core.stop_motion import StopMotion, _stop_rule, _stop_source
from tickguard.core.tick_handler import SymbolBatch
from tickguard.core.trade_snapshots import Snapshots
from tickguard.core.trades import QTY_EPS, Leg, Trade, TradeRequest
from tickguard.core.trail_groups import TrailGroups
from tickguard.core.trigger_book import LevelKind, TriggerBook
from tickguard.core.volatility import VolSnapshot


class TradeRejected(ValueError):
    """A trade request the engine refuses; the message says why."""


class TradeManager(StopMotion, Snapshots):
    def __init__(
        self,
        clock: Callable[[], int],
        volatility: Callable[[str], VolSnapshot | None],
        quote: Callable[[str], Tick | None],
        lot_size: Callable[[str], float] = lambda _s: 1.0,
        exit_order_type: OrderType = OrderType.MARKET,
        exit_limit_offset: float = 0.0,
        retry_backoff_ns: int = 500_000_000,
        on_event: Callable[[Trade, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._clock = clock
        self._vol = volatility
        self._quote = quote
        self._lot = lot_size
        self._exit_type = exit_order_type
        self._exit_offset = exit_limit_offset
        self._retry_ns = retry_backoff_ns
        self._on_event = on_event
        self.book = TriggerBook(self._invalidate)
        # Trades whose stop follows the best price (trailing, break-even not yet armed), per (symbol,
        # source, sign), sorted by best: a new high visits only the trades it actually moves.
        self._dyn: dict[str, dict[tuple[TriggerSource, int], SortedList]] = {}
        self.guards: dict[str, tuple[float, ...]] = {}
        self.trail_groups = TrailGroups(self._invalidate)
        self.guard_listener: Callable[[str], None] | None = None  # the tick handler's cached copy
        self.trades: dict[str, Trade] = {}
        self._by_symbol: dict[str, list[Trade]] = {}
        self._legs: dict[int, tuple[Trade, Leg]] = {}
        self._ids = itertools.count(1)
        self._level_ids = itertools.count(1)
        self._timers: list[tuple[int, int, str, str]] = []
        self._timer_seq = itertools.count()
        self.outbox: list[OrderIntent] = []
        self.cancels: list[str] = []
        self.moved: set[str] = set()  # trades whose stop moved since the journal last looked
        self._refs: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------------------------------ intake

    def submit(self, request: TradeRequest, trade_id: str | None = None) -> Trade:
        """Validate a request against market data and queue its entry, or raise ``TradeRejected``."""
        symbol = request.symbol
        vol = self._vol(symbol)
        if vol is None:
            raise TradeRejected(f"unknown symbol {symbol!r}: no contract or volatility for it")
        ref = request.limit_price
        if ref is None:
            tick = self._quote(symbol)
            if tick is None:
                raise TradeRejected(f"{symbol}: no quote yet, cannot check the exits against the entry")
            ref = tick.ask if request.side.sign > 0 else tick.bid
        sign = request.side.sign
        for rule in request.rules:
            if isinstance(rule, StopLoss) and rule.price is not None and sign * rule.price >= sign * ref:
                raise TradeRejected(
                    f"stop_loss price {rule.price} is on the wrong side of the entry ({ref}) for a "
                    f"{request.side.value} trade"
                )
            if isinstance(rule, TakeProfit) and rule.price is not None and sign * rule.price <= sign * ref:
                raise TradeRejected(
                    f"take_profit price {rule.price} is on the wrong side of the entry ({ref}) for a "
                    f"{request.side.value} trade"
                )
        if request.ref is not None and (request.user, request.ref) in self._refs:
            raise TradeRejected(f"user {request.user!r} already has a trade with ref {request.ref!r}")
        lot = self._lot(symbol)
        if request.qty + QTY_EPS < lot or abs(request.qty / lot - round(request.qty / lot)) > 1e-6:
            raise TradeRejected(f"qty {request.qty} is not a whole number of lots of {lot} for {symbol}")
        tid = trade_id or f"T{next(self._ids):05d}"
        if tid in self.trades:
            raise TradeRejected(f"trade id {tid} already exists")
        now = self._clock()
        trade = self._new_trade(tid, request, now)
        trade.entry_key = f"tg:{tid}:entry"
        trade.entry_working = True
        self._emit(trade, "accepted", {"request": request.model_dump(mode="json")})
        self.outbox.append(
            OrderIntent(
                key=trade.entry_key, trade_id=tid, leg="entry", user=request.user, account=request.account,
                symbol=symbol, action=request.side.entry_action, qty=request.qty,
                order_type=request.entry_type, limit_price=request.limit_price,
                priority=PriorityClass.ENTRY, created_ns=now,
            )
        )
        if request.entry_timeout_s is not None:
            self._timer(now + int(request.entry_timeout_s * 1e9), tid, "entry_timeout")
        return trade

    def _new_trade(self, tid: str, request: TradeRequest, created_ns: int) -> Trade:
        trade = Trade(id=tid, request=request, sign=request.side.sign, created_ns=created_ns)
        tps = [r for r in request.rules if isinstance(r, TakeProfit)]
        if request.rule(StopLoss) or request.rule(TrailingStop):
            trade.stop = Leg(tid, "stop", next(self._level_ids), _stop_source(request))
        if request.rule(TimeStop):
            trade.time_leg = Leg(tid, "time", next(self._level_ids), TriggerSource.AUTO)
        trade.targets = [
            Leg(tid, f"tp{i}", next(self._level_ids), r.trigger.resolve(request.side), r.fraction, r)
            for i, r in enumerate(tps, start=1)
        ]
        for leg in trade.legs():
            self._legs[leg.level_id] = (trade, leg)
        self.trades[tid] = trade
        self._by_symbol.setdefault(request.symbol, []).append(trade)
        if request.ref is not None:
            self._refs.add((request.user, request.ref))
        return trade

    def reserve_refs(self, refs: set[tuple[str, str]]) -> None:
        self._refs |= refs

    def knows_ref(self, user: str, ref: str) -> bool:
        return (user, ref) in self._refs

    # ------------------------------------------------------------------------------------- evaluation

    def evaluate(self, batch: SymbolBatch) -> None:
        """Fire every leg whose level the batch crossed, then move trailing/break-even stops."""
        symbol = batch.symbol
        book = self.book
        marks = self.trail_groups.marks.get(symbol)
        if marks is not None:
            bid = batch.tracks[TriggerSource.BID]
            ask = batch.tracks[TriggerSource.ASK]
            if bid.last_seq >= 0:
                marks.observe(bid.high, ask.low)
        for source, sign in book.sources(symbol):
            view = batch.view(source, sign)
            if view is None:
                continue
            for level_id in book.pop_crossed(symbol, source, sign, view.low_x, view.high_x):
                trade, leg = self._legs[level_id]
                if leg.terminal:
                    info = _info(leg, view.low_x, view.low_seq, view.low_ts, sign, _stop_rule(trade))
                    self._fire_terminal(trade, leg, info)
                else:
                    info = _info(leg, view.high_x, view.high_seq, view.high_ts, sign, "take_profit")
                    self._fire_target(trade, leg, info)
        if marks is not None and (marks.bd != math.inf or marks.ad != math.inf):
            for sign, source in ((1, TriggerSource.BID), (-1, TriggerSource.ASK)):
                view = batch.view(source, sign)
                if view is None:
                    continue
                for level_id, level in self.trail_groups.pop_fired(symbol, sign, view.low_x):
                    trade, leg = self._legs[level_id]
                    trade.grouped = False
                    trade.trail_x = level
                    info = TriggerInfo("trailing_stop", sign * level, sign * view.low_x, view.low_seq,
                                       view.low_ts)
                    self._fire_terminal(trade, leg, info)
        dyn_books = self._dyn.get(symbol)
        if dyn_books:
            for (source, sign), dyn in list(dyn_books.items()):
                if not dyn:
                    continue
                view = batch.view(source, sign)
                if view is None or dyn[0][0] >= view.high_x:
                    continue
                end = dyn.bisect_left((view.high_x, -1))
                moved = dyn[:end]
                del dyn[:end]
                self._invalidate(symbol)
                for _, level_id in moved:
                    trade = self._legs[level_id][0]
                    self._advance_stop(trade, view)
                    if self._try_group(trade):
                        continue
                    if self._is_dynamic(trade):
                        dyn.add((trade.best_x, level_id))

    def on_volatility(self, snap: VolSnapshot) -> None:
        """Re-size ATR/ADR levels.  Stops never loosen unless their rule allows it; trails keep their level
        and use the new unit from the next extreme on; targets follow the volatility both ways."""
        for trade in self._by_symbol.get(snap.symbol, ()):
            if trade.entry_filled <= QTY_EPS or trade.state.is_final:
                continue
            if trade.grouped:
                self._ungroup(trade)
                self._track_dynamic(trade)
            self._size_levels(trade, snap, initial=False)

    def _size_levels(self, trade: Trade, vol: VolSnapshot, initial: bool) -> None:
        req = trade.request
        sign, entry = trade.sign, trade.entry_avg
        sl = req.rule(StopLoss)
        if sl is not None:
            level = stop_x(sl, sign, entry, vol.atr, vol.adr)
            if initial or sl.allow_loosen or trade.stop_base_x is None or level > trade.stop_base_x:
                trade.stop_base_x = level
        trail = req.rule(TrailingStop)
        if trail is not None and initial:
            trade.trail_x = trail_x(trail, sign, entry, trade.best_x, vol.atr, vol.adr)
        be = req.rule(BreakEven)
        if be is not None and trade.be_x is None:
            trade.be_x = break_even_x(be, sign, entry, trade.best_x, vol.atr, vol.adr)
        self._rearm_stop(trade)
        if trade.closing:
            return
        for leg in trade.targets:
            assert leg.rule is not None
            leg.level_x = target_x(leg.rule, sign, entry, vol.atr, vol.adr)
            if leg.level_id in self.book or self._target_wants(trade, leg) > QTY_EPS:
                self.book.upsert(leg.level_id, trade.symbol, leg.source, sign, LevelKind.TARGET, leg.level_x)

    # ------------------------------------------------------------------------------------------ firing

    def _fire_terminal(self, trade: Trade, leg: Leg, info: TriggerInfo) -> None:
        if not trade.closing:
            if trade.grouped:
                self._ungroup(trade)
            trade.closing = True
            trade.close_reason = info.rule
            for other in trade.legs():
                self.book.remove(other.level_id)
            self._track_dynamic(trade)
            if trade.entry_working:
                self.cancels.append(trade.entry_key)
            self._emit(trade, "closing", {"rule": info.rule, "level": info.level, "price": info.price,
                                          "tick_seq": info.tick_seq})
        qty = self._round(trade, trade.open_qty - trade.inflight)
        if qty > QTY_EPS:
            self._send_exit(trade, leg, qty, PriorityClass.EXIT_CRITICAL, info)
        self._refresh_state(trade)

    def _fire_target(self, trade: Trade, leg: Leg, info: TriggerInfo) -> None:
        if trade.closing:
            return
        qty = self._target_wants(trade, leg)
        if qty > QTY_EPS:
            self._send_exit(trade, leg, qty, PriorityClass.EXIT, info)
        self._refresh_state(trade)

    def _target_wants(self, trade: Trade, leg: Leg) -> float:
        """Quantity a take-profit leg still has to exit: its share of what is filled, less what it has
        exited or has in flight.  The last leg takes the remainder so the fractions always close it all."""
        lot = self._lot(trade.symbol)
        filled = trade.entry_filled
        if leg is trade.targets[-1]:
            others = sum(math.floor(o.fraction * filled / lot + 1e-9) * lot for o in trade.targets[:-1])
            alloc = filled - others
        else:
            alloc = math.floor(leg.fraction * filled / lot + 1e-9) * lot
        want = alloc - leg.filled - leg.inflight
        return min(want, trade.open_qty - trade.inflight)

    def _round(self, trade: Trade, qty: float) -> float:
        lot = self._lot(trade.symbol)
        return math.floor(qty / lot + 1e-9) * lot

    def _send_exit(
        self, trade: Trade, leg: Leg, qty: float, priority: PriorityClass, info: TriggerInfo | None
    ) -> None:
        leg.fired += 1
        leg.inflight += qty
        req = trade.request
        limit = None
        if self._exit_type is OrderType.LIMIT:
            tick = self._quote(trade.symbol)
            if tick is not None:
                base = tick.bid if trade.sign > 0 else tick.ask
                limit = base - trade.sign * self._exit_offset
        intent = OrderIntent(
            key=f"tg:{trade.id}:{leg.name}:{leg.fired}", trade_id=trade.id, leg=leg.name, user=req.user,
            account=req.account, symbol=trade.symbol, action=req.side.exit_action, qty=qty,
            order_type=self._exit_type if limit is not None else OrderType.MARKET, limit_price=limit,
            priority=priority, created_ns=self._clock(), trigger=info,
        )
        self._emit(trade, "exit_intent", {"key": intent.key, "leg": leg.name, "qty": qty,
                                          "trigger": None if info is None else _info_dict(info)})
        self.outbox.append(intent)

    # ---------------------------------------------------------------------------------- order outcomes

    def on_fill(self, intent: OrderIntent, qty: float, price: float, ts_ns: int, commission: float) -> None:
        trade = self.trades[intent.trade_id]
        trade.commissions += commission
        if intent.leg == "entry":
            first = trade.entry_filled <= QTY_EPS
            total = trade.entry_filled + qty
            trade.entry_avg = (trade.entry_avg * trade.entry_filled + price * qty) / total
            trade.entry_filled = total
            if total >= trade.request.qty - QTY_EPS:
                trade.entry_working = False
            self._emit(trade, "entry_fill", {"qty": qty, "price": price, "ts_ns": ts_ns})
            vol = self._vol(trade.symbol)
            if first:
                trade.entry_ts_ns = ts_ns
                trade.best_x = trade.sign * price
                time_rule = trade.request.rule(TimeStop)
                if time_rule is not None:
                    trade.time_deadline_ns = time_rule.deadline_ns(ts_ns)
                    self._timer(trade.time_deadline_ns, trade.id, "time_stop")
            if trade.closing:  # a late entry fill after the trade was stopped: flatten it too
                leg = trade.stop or trade.time_leg
                assert leg is not None
                self._fire_terminal(trade, leg, TriggerInfo(trade.close_reason, math.nan, price, -1, ts_ns))
            elif vol is not None:
                self._size_levels(trade, vol, initial=first)
                self._try_group(trade)
            self._track_dynamic(trade)
        else:
            leg = self._leg(trade, intent.leg)
            leg.filled += qty
            leg.inflight = max(0.0, leg.inflight - qty)
            trade.exited += qty
            trade.realized += trade.sign * (price - trade.entry_avg) * qty
            self._emit(trade, "exit_fill", {"leg": leg.name, "key": intent.key, "qty": qty, "price": price,
                                            "ts_ns": ts_ns})
        self._refresh_state(trade)

    def on_commission(self, intent: OrderIntent, commission: float) -> None:
        self.trades[intent.trade_id].commissions += commission

    def on_intent_closed(self, intent: OrderIntent, status: str, remaining: float, reason: str) -> None:
        """The order for ``intent`` is over: filled, cancelled or rejected (after the executor's retries)."""
        trade = self.trades[intent.trade_id]
        if intent.leg == "entry":
            trade.entry_working = False
            if trade.entry_filled <= QTY_EPS and not trade.state.is_final:
                trade.state = TradeState.REJECTED if status == "rejected" else TradeState.CANCELLED
                trade.reason = reason or status
                for leg in trade.legs():
                    self.book.remove(leg.level_id)
                self._emit(trade, trade.state.value, {"reason": trade.reason})
                return
            if status != "filled":
                self._emit(trade, "entry_done", {"status": status, "filled": trade.entry_filled,
                                                 "reason": reason})
        elif remaining > QTY_EPS:
            leg = self._leg(trade, intent.leg)
            leg.inflight = max(0.0, leg.inflight - remaining)
            self._emit(trade, "exit_failed", {"key": intent.key, "leg": leg.name, "remaining": remaining,
                                              "status": status, "reason": reason})
            # Never leave a position unprotected: retry a closing exit, re-arm a target, after a pause that
            # doubles with each failure of the leg (capped) so a broker that keeps refusing is not flooded.
            pause = self._retry_ns * min(2 ** max(leg.fired - 1, 0), 64)
            self._timer(self._clock() + pause, trade.id, f"retry:{leg.name}")
        self._refresh_state(trade)

    # -------------------------------------------------------------------------------------------- time

    def next_deadline(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def on_time(self, now_ns: int) -> None:
        while self._timers and self._timers[0][0] <= now_ns:
            _, _, tid, what = heapq.heappop(self._timers)
            trade = self.trades[tid]
            if trade.state.is_final:
                continue
            if what == "time_stop" and trade.time_leg is not None and trade.open_qty > QTY_EPS:
                self._fire_terminal(trade, trade.time_leg, TriggerInfo("time_stop", math.nan, math.nan, -1,
                                                                        now_ns))
            elif what == "entry_timeout" and trade.entry_working:
                self.cancels.append(trade.entry_key)
                self._emit(trade, "entry_timeout", {})
            elif what.startswith("retry:"):
                leg = self._leg(trade, what.split(":", 1)[1])
                if trade.closing:
                    self._fire_terminal(trade, leg, TriggerInfo(trade.close_reason, math.nan, math.nan, -1,
                                                                now_ns))
                elif leg.level_x is not None and not leg.terminal:
                    self.book.upsert(leg.level_id, trade.symbol, leg.source, trade.sign, LevelKind.TARGET,
                                     leg.level_x)
            self._refresh_state(trade)

    # ---------------------------------------------------------------------------------------- recovery

    # ----------------------------------------------------------------------------------------- queries

    def distance_to_stop(self, trade: Trade, tick: Tick | None = None) -> float:
        """(price - stop) / ATR, signed so that small means about to be stopped out; +inf if no stop."""
        stop = trade.stop
        if stop is None or stop.level_x is None or trade.closing:
            return math.inf
        tick = tick or self._quote(trade.symbol)
        vol = self._vol(trade.symbol)
        if tick is None or vol is None:
            return math.inf
        return (trade.sign * tick.price(stop.source) - stop.level_x) / vol.atr

    def live_trades(self) -> list[Trade]:
        return [t for t in self.trades.values() if not t.state.is_final]

    # --------------------------------------------------------------------------------------- internals

    def _leg(self, trade: Trade, name: str) -> Leg:
        for leg in trade.legs():
            if leg.name == name:
                return leg
        raise KeyError(f"trade {trade.id} has no leg {name!r}")

    def _timer(self, due_ns: int, trade_id: str, what: str) -> None:
        heapq.heappush(self._timers, (due_ns, next(self._timer_seq), trade_id, what))

    def _refresh_state(self, trade: Trade) -> None:
        if trade.state.is_final:
            return
        before = trade.state
        if trade.entry_filled <= QTY_EPS:
            trade.state = TradeState.PENDING_ENTRY
        elif trade.open_qty <= QTY_EPS and not trade.entry_working and trade.inflight <= QTY_EPS:
            trade.state = TradeState.CLOSED
            trade.close_reason = trade.close_reason or "take_profit"
            self._ungroup(trade)
            for leg in trade.legs():
                self.book.remove(leg.level_id)
            self._track_dynamic(trade)
        elif trade.inflight > QTY_EPS or trade.closing:
            trade.state = TradeState.EXITING
        else:
            trade.state = TradeState.OPEN
        if trade.state is not before:
            self._emit(trade, "state", {"from": before.value, "to": trade.state.value})

    def _emit(self, trade: Trade, kind: str, data: dict[str, Any]) -> None:
        record = {"ts_ns": self._clock(), "event": kind, **data}
        trade.history.append(record)
        if self._on_event is not None:
            self._on_event(trade, kind, record)


def _info(leg: Leg, price_x: float, seq: int, ts: int, sign: int, rule: str) -> TriggerInfo:
    level = sign * leg.level_x if leg.level_x is not None else math.nan
    return TriggerInfo(rule, level, sign * price_x, seq, ts)


def _info_dict(info: TriggerInfo) -> dict[str, Any]:
    return {"rule": info.rule, "level": info.level, "price": info.price, "tick_seq": info.tick_seq,
            "tick_ts_ns": info.tick_ts_ns}

