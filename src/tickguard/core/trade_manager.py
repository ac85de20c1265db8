"""Trade lifecycle and exit evaluation (pure core: no I/O, no asyncio).

The manager owns the trades, arms their legs in the trigger book, decides on each tick that may matter
which legs fire, and puts the resulting ``OrderIntent``s in ``outbox`` (and entry cancels in ``cancels``)
for the executor.  It learns what happened to them through ``on_fill`` / ``on_intent_closed``.  State:
pending_entry -> open -> exiting -> closed (or rejected / cancelled), or halted by an over-fill (``halts``).

It is composed of objects that own their state: the ``TriggerBook`` (levels), the ``StopTracker``
(moving stops and trail groups), the ``GuardCache`` (what the tick handler may skip) and ``TradeTimers``.

Size: a little over 500 lines - the lifecycle's one home (accept, fire, fills, outcomes, timers, restore, the
queries the runtime asks); every part with state of its own is a module already.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tickguard.core.effective_stop import EffectiveStop
from tickguard.core.exit_orders import ExitAlert, ExitPolicy
from tickguard.core.exit_rules import StopLoss, TakeProfit, TimeStop, TrailingStop, target_x
from tickguard.core.exit_sizing import target_wants, whole_lots
from tickguard.core.guards import Guard, GuardCache
from tickguard.core.halts import Execution, Overfill, fitting, stop_automation
from tickguard.core.live_trades import LiveTrades
from tickguard.core.model import OrderIntent, OrderType, PriorityClass, Tick, TradeState, TriggerInfo, TriggerSource
from tickguard.core.money import ZERO, decimal_of, exact, ratio
from tickguard.core.open_positions import OpenPositions
from tickguard.core.order_state import OrderStatus
from tickguard.core.price_grid import CENT, PriceGrid
from tickguard.core.stop_motion import StopTracker, stop_source
from tickguard.core.trade_checks import MarketFacts, TradeRejected, check_request
from tickguard.core.trade_snapshots import apply_snapshot, snapshot
from tickguard.core.trade_timers import TradeTimers
from tickguard.core.trades import Leg, Trade, TradeRequest
from tickguard.core.trail_groups import Marks
from tickguard.core.trigger_book import LevelKind, TriggerBook
from tickguard.core.volatility import VolSnapshot


class TradeManager:
    def __init__(
        self,
        clock: Callable[[], int],
        volatility: Callable[[str], VolSnapshot | None],
        quote: Callable[[str], Tick | None],
        lot_size: Callable[[str], Decimal] = lambda _s: Decimal(1),
        grid: Callable[[str], PriceGrid] = lambda _s: CENT,
        exit_order_type: OrderType = OrderType.MARKET,
        exit_limit_offset: float | Decimal = 0,
        retry_backoff_ns: int = 500_000_000,
        on_event: Callable[[Trade, str, dict[str, Any]], None] | None = None,
        instance_id: str | None = None,  # the journal's id, in every key: tg:<id>:T00001:entry (None: tg:T00001:...)
    ) -> None:
        if instance_id is not None and not (instance_id.isascii() and instance_id.isalnum()):
            raise ValueError(f"instance id {instance_id!r} must be letters and digits (it goes into orderRef)")
        self.key_prefix = f"tg:{instance_id}:" if instance_id else "tg:"
        self._clock = clock
        self._vol = volatility
        self._quote = quote
        self._lot = lot_size
        self._grid = grid  # each symbol's tick: every price in the core is in its units (price_grid)
        self.exit_policy = ExitPolicy(exit_order_type, decimal_of(exit_limit_offset), retry_backoff_ns)
        self.alerts: list[ExitAlert] = []  # exits refused, newest last: the engine logs and drains them
        self.on_event = on_event  # the journal recorder listens here
        self.book = TriggerBook()
        self.positions = OpenPositions()  # what the trades hold open, per account and symbol (for reconciliation)
        self.stops = StopTracker(self.book, volatility, self._trade_of_level, self._changed, grid)
        self.guards = GuardCache(self.book, self.stops.following_ends)
        self.book.on_change = self.guards.invalidate
        self.timers = TradeTimers()
        self.trades: dict[str, Trade] = {}  # every trade of this run, over or not
        self.live = LiveTrades()  # the ones not over, by symbol and state (kept as their states change)
        self._legs: dict[int, tuple[Trade, Leg]] = {}
        self._ids = itertools.count(1)
        self._level_ids = itertools.count(1)
        self.outbox: list[OrderIntent] = []
        self.cancels: list[str] = []
        self._refs: set[tuple[str, str]] = set()

    def read_quotes_from(self, quote: Callable[[str], Tick | None]) -> None:
        """Where the last quote of a symbol comes from (the tick handler, once it exists)."""
        self._quote = quote

    def _changed(self, symbol: str) -> None:
        self.guards.invalidate(symbol)

    def _trade_of_level(self, level_id: int) -> Trade:
        return self._legs[level_id][0]

    # ------------------------------------------------------------------------------------------ intake

    def submit(self, request: TradeRequest, trade_id: str | None = None) -> Trade:
        """Validate a request against market data and queue its entry, or raise ``TradeRejected``."""
        self._check(request)
        tid = trade_id or f"T{next(self._ids):05d}"
        if tid in self.trades:
            raise TradeRejected(f"trade id {tid} already exists")
        now = self._clock()
        trade = self._new_trade(tid, request, now)
        trade.entry_key = f"{self.key_prefix}{tid}:entry"
        trade.entry_working = True
        self._emit(trade, "accepted", {"request": request.model_dump(mode="json")})
        self.outbox.append(OrderIntent(
            key=trade.entry_key, trade_id=tid, leg="entry", user=request.user, account=request.account or "",
            symbol=request.symbol, action=request.side.entry_action, qty=request.qty, order_type=request.entry_type,
            limit_price=request.limit_price, priority=PriorityClass.ENTRY, created_ns=now))
        if request.entry_timeout_s is not None:
            self.timers.set(now + int(request.entry_timeout_s * 1e9), tid, "entry_timeout")
        return trade

    def _check(self, request: TradeRequest) -> None:
        symbol = request.symbol
        facts = MarketFacts(self._vol(symbol), self._quote(symbol), self._lot(symbol), self._grid(symbol))
        check_request(request, facts)
        if request.ref is not None and (request.user, request.ref) in self._refs:
            raise TradeRejected(f"user {request.user!r} already has a trade with ref {request.ref!r}")

    def _new_trade(self, tid: str, request: TradeRequest, created_ns: int) -> Trade:
        trade = Trade(id=tid, request=request, sign=request.side.sign, created_ns=created_ns)
        if request.rule(StopLoss) or request.rule(TrailingStop):
            trade.stop = Leg(tid, "stop", next(self._level_ids), stop_source(request))
        if request.rule(TimeStop):
            trade.time_leg = Leg(tid, "time", next(self._level_ids), TriggerSource.AUTO)
        tps = [r for r in request.rules if isinstance(r, TakeProfit)]
        trade.targets = [Leg(tid, f"tp{i}", next(self._level_ids), r.trigger.resolve(request.side), r.fraction, r)
                         for i, r in enumerate(tps, start=1)]
        for leg in trade.legs():
            self._legs[leg.level_id] = (trade, leg)
        self.trades[tid] = trade
        self.live.add(trade)
        if request.ref is not None:
            self._refs.add((request.user, request.ref))
        return trade

    def reserve_refs(self, refs: set[tuple[str, str]]) -> None:
        self._refs |= refs

    def knows_ref(self, user: str, ref: str) -> bool:
        return (user, ref) in self._refs

    def reserve_ids(self, highest: int) -> None:
        """Never hand out a trade id at or below ``highest`` (ids already used in the journal)."""
        current = next(self._ids)
        self._ids = itertools.count(max(current, highest + 1))

    # ------------------------------------------------------------------------------------- evaluation

    def evaluate(self, tick: Tick) -> None:
        """Fire every leg whose level ``tick`` reached, then move trailing/break-even stops it improves.

        Stops fire before targets whatever price source each watches: when one tick reaches a trade's stop
        (on the bid, say) and its target (on the last), the position is protected first and whole."""
        symbol = tick.symbol
        marks = self.stops.groups.marks.get(symbol)
        if marks is not None:
            marks.observe(tick.bid, tick.ask)
        targets: list[tuple[Trade, Leg, int]] | None = None  # built only when a target fires (rare)
        for source, sign in self.book.sources(symbol):
            price = tick.price(source)
            if not price:  # no such price in this tick (a quote-only feed has no last)
                continue
            x = sign * price
            for level_id in self.book.pop_crossed(symbol, source, sign, x, x):
                trade, leg = self._legs[level_id]
                if leg.terminal:
                    self._fire_terminal(trade, leg, _crossing(self._grid(symbol), trade, leg,
                                                              self.stops.fired_rule(trade), tick, price))
                elif targets is None:
                    targets = [(trade, leg, price)]
                else:
                    targets.append((trade, leg, price))
        for level_id, info in self.stops.pop_group_fired(tick):
            trade, leg = self._legs[level_id]
            self._fire_terminal(trade, leg, info)
        for trade, leg, price in targets or ():
            self._fire_target(trade, leg, _crossing(self._grid(symbol), trade, leg, "take_profit", tick, price))
        for trade, info in self.stops.advance_symbol(tick):
            assert trade.stop is not None
            self._fire_terminal(trade, trade.stop, info)

    def on_volatility(self, snap: VolSnapshot) -> None:
        """Re-size ATR/ADR levels: stops by their rule's policy (see ``StopTracker.size``); targets follow
        the volatility both ways."""
        for trade in self.live.of_symbol(snap.symbol):
            if trade.entry_filled == 0 or not trade.state.automated:
                continue
            if trade.grouped:
                self.stops.ungroup(trade)
                self.stops.track(trade)
            self._size_levels(trade, snap, initial=False)

    def _size_levels(self, trade: Trade, vol: VolSnapshot, initial: bool, fill: bool = False) -> None:
        self.stops.size(trade, vol, initial, fill)
        if trade.closing:
            return
        grid = self._grid(trade.symbol)
        entry_x = trade.entry_x(grid)
        for leg in trade.targets:
            assert leg.rule is not None
            leg.level_x = target_x(leg.rule, trade.sign, entry_x, vol, grid)
            if leg.level_id in self.book or self._target_wants(trade, leg) > 0:
                self.book.upsert(leg.level_id, trade.symbol, leg.source, trade.sign, LevelKind.TARGET, leg.level_x)

    # ------------------------------------------------------------------------------------------ firing

    def _fire_terminal(self, trade: Trade, leg: Leg, info: TriggerInfo) -> None:
        if trade.state is TradeState.HALTED:
            return
        if not trade.closing:
            self.stops.ungroup(trade)
            trade.closing = True
            trade.close_reason = info.rule
            for other in trade.legs():
                self.book.remove(other.level_id)
            self.stops.track(trade)
            if trade.entry_working:
                self.cancels.append(trade.entry_key)
            self._emit(trade, "closing", info.to_dict())
        qty = whole_lots(trade.open_qty - trade.inflight, self._lot(trade.symbol))
        if qty > 0:
            self._send_exit(trade, leg, qty, PriorityClass.EXIT_CRITICAL, info)
        self._refresh_state(trade)

    def _fire_target(self, trade: Trade, leg: Leg, info: TriggerInfo) -> None:
        if trade.closing or trade.state is TradeState.HALTED:
            return
        qty = self._target_wants(trade, leg)
        if qty > 0:
            self._send_exit(trade, leg, qty, PriorityClass.EXIT, info)
        self._refresh_state(trade)

    def _target_wants(self, trade: Trade, leg: Leg) -> Decimal:
        return target_wants(trade, leg, self._lot(trade.symbol))

    def _send_exit(
        self, trade: Trade, leg: Leg, qty: Decimal, priority: PriorityClass, info: TriggerInfo | None
    ) -> None:
        leg.fired += 1
        leg.inflight += qty
        intent = self._exit_intent(trade, leg, qty, priority, info, leg.fired)
        self._emit(trade, "exit_intent", {"key": intent.key, "leg": leg.name, "qty": qty,
                                          "trigger": None if info is None else info.to_dict()})
        self.outbox.append(intent)

    def _exit_intent(self, trade: Trade, leg: Leg, qty: Decimal, priority: PriorityClass, info: TriggerInfo | None,
                     fired: int) -> OrderIntent:
        """The order of ``leg``'s ``fired``-th exit (read-only: a fire's, and the exit rehearsal's)."""
        req = trade.request
        limit = self.exit_policy.limit(leg.failures, self._quote(trade.symbol), self._grid(trade.symbol), trade.sign)
        return OrderIntent(
            key=f"{self.key_prefix}{trade.id}:{leg.name}:{fired}", trade_id=trade.id, leg=leg.name, user=req.user,
            account=req.account or "", symbol=trade.symbol, action=req.side.exit_action, qty=qty,
            order_type=OrderType.MARKET if limit is None else OrderType.LIMIT, limit_price=limit,
            priority=priority, created_ns=self._clock(), trigger=info,
        )

    def rehearse_exit(self, symbol: str) -> tuple[OrderIntent, dict[str, Any]] | None:
        """The exit the stop nearest ``symbol``'s market would send if the last quote crossed it, and its event's
        data - built by a fire's own code, changing nothing (None: no such stop, no quote, nothing to sell).  Why:
        the engine rehearses an exit while idle (runtime/exit_rehearsal.py) so that this code and that trade's
        objects are in the CPU's caches when a tick does cross; cold, they cost most of an exit's time."""
        nearest = self.book.nearest_stop(symbol)
        tick = self._quote(symbol)
        if nearest is None or tick is None:
            return None
        level_id, source, _ = nearest
        trade, leg = self._legs[level_id]
        price = tick.price(source)
        qty = whole_lots(trade.open_qty - trade.inflight, self._lot(symbol))
        if not price or qty <= 0 or not leg.terminal or not trade.state.automated:
            return None
        info = _crossing(self._grid(symbol), trade, leg, self.stops.fired_rule(trade), tick, price)
        intent = self._exit_intent(trade, leg, qty, PriorityClass.EXIT_CRITICAL, info, leg.fired + 1)
        return intent, {"key": intent.key, "leg": leg.name, "qty": qty, "trigger": info.to_dict()}

    # ---------------------------------------------------------------------------------- order outcomes

    def on_fill(self, intent: OrderIntent, qty: Decimal, price: Decimal, ts_ns: int, commission: Decimal,
                execution: Execution | None = None) -> Overfill | None:
        """One execution of ``intent``'s order: ``qty`` at ``price`` (exact, as the broker reported it) - the part
        within its order; ``execution`` the whole of it.  Only what fits the order, the request (entry) and the
        filled entry (exit) is applied; an excess halts the trade, and its evidence is returned."""
        qty, price, commission = exact(qty), exact(price), exact(commission)
        trade = self.trades[intent.trade_id]
        trade.commissions += commission
        execution = execution or Execution("", intent.qty, None, qty)
        applied, past = fitting(trade, intent.leg, qty, execution)
        before = trade.state
        if applied != execution.qty:  # halted before anything is applied, so nothing of it can fire
            stop_automation(trade, self.book, self.stops)
        if applied > 0 and intent.leg == "entry":
            if trade.state in (TradeState.CANCELLED, TradeState.REJECTED):
                self._revive(trade, intent)
            self._entry_fill(trade, applied, price, ts_ns)
        elif applied > 0:
            leg = trade.leg(intent.leg)
            leg.filled += applied
            leg.inflight = max(ZERO, leg.inflight - applied)
            trade.exited += applied
            self.positions.add(trade, -applied)
            trade.exit_proceeds += price * applied
            self._emit(trade, "exit_fill", {"leg": leg.name, "key": intent.key, "qty": applied, "price": price,
                                            "ts_ns": ts_ns})
        self._refresh_state(trade)
        if applied == execution.qty:
            return None
        over = Overfill.of(trade, intent, execution, applied, past)
        trade.reason = f"{trade.reason}; {over.describe()}" if before is TradeState.HALTED else over.describe()
        self._emit(trade, "halted", {"from": before.value, **over.to_dict()})
        return over

    def halt(self, trade_id: str, why: str) -> None:
        """Make a trade HALTED for a reason outside its fills (``halts``: nothing automated is sent for it again,
        its levels leave the book, it is reloaded at a restart and reported there) - for a fault the engine cannot
        settle on its own, such as an exit decided a second time under a key that is already an order's."""
        trade = self.trades[trade_id]
        before = trade.state
        if before is not TradeState.HALTED:
            stop_automation(trade, self.book, self.stops)
        trade.reason = f"{trade.reason}; {why}" if before is TradeState.HALTED else why
        self._emit(trade, "halted", {"from": before.value, "reason": why})

    def _revive(self, trade: Trade, intent: OrderIntent) -> None:
        """An entry fill after the entry ended unfilled (a fill that raced its cancel, applied late by the executor):
        the position exists, so the trade is live again - the fill arms its levels, its snapshot says so, a restart
        restores it.  Found by an independent review: it stayed cancelled with its position, its stop armed while
        the engine ran but gone after a restart (a final trade is not restored)."""
        before = trade.state
        trade.state = TradeState.PENDING_ENTRY  # the fill that follows makes it open (``_refresh_state``)
        self._emit(trade, "revived", {"from": before.value, "key": intent.key,
                                      "reason": "an entry fill after its entry ended unfilled"})

    def _entry_fill(self, trade: Trade, qty: Decimal, price: Decimal, ts_ns: int) -> None:
        first = trade.entry_filled == 0
        trade.entry_filled += qty
        self.positions.add(trade, qty)
        trade.entry_cost += price * qty
        trade.entry_avg = ratio(trade.entry_cost, trade.entry_filled)
        if trade.entry_filled >= trade.request.qty:
            trade.entry_working = False
        self._emit(trade, "entry_fill", {"qty": qty, "price": price, "ts_ns": ts_ns})
        vol = self._vol(trade.symbol)
        # Moves are measured from the latest entry fill (off the grid, a sub-tick print, it counts as no better
        # than it was): a position averaged down was never in profit at its old best (no break-even armed by it)
        self.stops.ungroup(trade)
        trade.best_x = math.floor(trade.sign * self._grid(trade.symbol).fraction(Fraction(price)))
        if first:
            trade.entry_ts_ns = ts_ns
            time_rule = trade.request.rule(TimeStop)
            if time_rule is not None:
                trade.time_deadline_ns = time_rule.deadline_ns(ts_ns)
                self.timers.set(trade.time_deadline_ns, trade.id, "time_stop")
        if trade.state is TradeState.HALTED:  # its figures move, nothing is armed or sent
            return
        if trade.closing:  # a late entry fill after the trade was stopped: flatten it too
            leg = trade.stop or trade.time_leg
            assert leg is not None
            self._fire_terminal(trade, leg, TriggerInfo(trade.close_reason, None, price, -1, ts_ns))
        elif vol is not None:
            self._size_levels(trade, vol, initial=first, fill=True)
            self.stops.try_group(trade)
        self.stops.track(trade)

    def on_commission(self, intent: OrderIntent, commission: Decimal) -> None:
        self.trades[intent.trade_id].commissions += exact(commission)

    def on_intent_closed(self, intent: OrderIntent, status: OrderStatus, remaining: Decimal, reason: str) -> None:
        """The order for ``intent`` is over: filled, cancelled or rejected (after the executor's retries)."""
        trade = self.trades[intent.trade_id]
        remaining = exact(remaining)
        if intent.leg == "entry":
            trade.entry_working = False
            if trade.entry_filled == 0 and trade.state.automated:
                trade.state = TradeState.REJECTED if status is OrderStatus.REJECTED else TradeState.CANCELLED
                trade.reason = reason or status
                for leg in trade.legs():
                    self.book.remove(leg.level_id)
                self._emit(trade, trade.state.value, {"reason": trade.reason})
                return
            if status is not OrderStatus.FILLED:
                self._emit(trade, "entry_done", {"status": str(status), "filled": trade.entry_filled,
                                                 "reason": reason})
        elif remaining > 0:
            leg = trade.leg(intent.leg)
            leg.inflight = max(ZERO, leg.inflight - remaining)
            leg.failures += 1  # never leave a position unprotected: retried by the policy (core/exit_orders.py)
            pause = self.exit_policy.pause_ns(leg.failures) if trade.state.automated else None
            self._emit(trade, "exit_failed", {"key": intent.key, "leg": leg.name, "remaining": remaining,
                                              "status": status, "reason": reason, "retry_in_ns": pause})
            self.alerts.append(ExitAlert(trade.id, leg.name, intent.key, str(status), reason, remaining,
                                         self.exit_policy.type_after(leg.failures), pause, self._clock()))
            if pause is not None:  # a halted trade is retried by no one
                self.timers.set(self._clock() + pause, trade.id, f"retry:{leg.name}")
        self._refresh_state(trade)

    # -------------------------------------------------------------------------------------------- time

    def next_deadline(self) -> int | None:
        return self.timers.next_deadline()

    def on_time(self, now_ns: int) -> None:
        for tid, what in self.timers.due(now_ns):
            trade = self.trades[tid]
            if not trade.state.automated:  # over, or halted: no timer acts for it
                continue
            if what == "time_stop" and trade.time_leg is not None and trade.open_qty > 0:
                self._fire_terminal(trade, trade.time_leg, TriggerInfo("time_stop", None, None, -1, now_ns))
            elif what == "entry_timeout" and trade.entry_working:
                self.cancels.append(trade.entry_key)
                self._emit(trade, "entry_timeout", {})
            elif what.startswith("retry:"):
                self._retry_leg(trade, trade.leg(what.split(":", 1)[1]), now_ns)
            self._refresh_state(trade)

    def _retry_leg(self, trade: Trade, leg: Leg, now_ns: int) -> None:
        if trade.closing:
            self._fire_terminal(trade, leg, TriggerInfo(trade.close_reason, None, None, -1, now_ns))
        elif leg.level_x is not None and not leg.terminal:
            self.book.upsert(leg.level_id, trade.symbol, leg.source, trade.sign, LevelKind.TARGET, leg.level_x)

    # ---------------------------------------------------------------------------------------- restart

    def snapshot(self, trade: Trade) -> dict[str, Any]:
        """What the journal keeps of a trade (see ``trade_snapshots``)."""
        return snapshot(trade, self.stops, self.book.__contains__, self._grid(trade.symbol))

    def restore(self, trade_id: str, request: TradeRequest, snap: dict[str, Any], created_ns: int,
                entry_key: str | None = None) -> Trade:
        """Rebuild a trade from its journaled snapshot (and entry key): levels back in the book, timers re-armed."""
        trade = self._new_trade(trade_id, request, created_ns)
        armed = apply_snapshot(trade, snap, self._grid(trade.symbol))
        self.positions.add(trade, trade.entry_filled - trade.exited)
        trade.entry_key = entry_key or f"{self.key_prefix}{trade_id}:entry"
        if trade.state.automated and not trade.closing:  # a halted trade is restored halted: nothing armed
            for leg in trade.legs():
                if leg.name in armed and leg.level_x is not None:
                    kind = LevelKind.STOP if leg.terminal else LevelKind.TARGET
                    self.book.upsert(leg.level_id, trade.symbol, leg.source, trade.sign, kind, leg.level_x)
            # the stop from its components: a trailing part that a trail group held is not in the leg's level
            self.stops.rearm(trade)
            if trade.time_deadline_ns is not None:
                self.timers.set(trade.time_deadline_ns, trade_id, "time_stop")
        self.stops.track(trade)
        if trade.entry_working and request.entry_timeout_s is not None:
            self.timers.set(created_ns + int(request.entry_timeout_s * 1e9), trade_id, "entry_timeout")
        number = "".join(ch for ch in trade_id if ch.isdigit())
        if number:
            self.reserve_ids(int(number))
        return trade

    def adopt_order(self, intent: OrderIntent, fired: int) -> None:
        """One order its trade's snapshot does not count (see ``adopt_orders``)."""
        self.adopt_orders([(intent, fired)])

    def adopt_orders(self, adopted: Iterable[tuple[OrderIntent, int]]) -> None:
        """Orders their trades' snapshots do not count - found at the broker and never journaled (sent, then a
        crash before the commit), or journaled by an exit's commit just before a restart, ahead of the snapshot
        (``recovery.adopt_journaled_fires``) - each with its fire number: every leg counts its order in flight and
        as fired, its level out of the book, so nothing sends it again; then a trade with a stop or time leg among
        them closes as if it had fired, for the reason the intent recorded (what is not covered yet goes out now).
        All are counted before any trade closes: counted one by one, a stop taken before a target of the same
        trade would find the target's quantity uncovered and decide a second exit for it (an over-sell)."""
        touched: dict[str, Trade] = {}
        terminal: dict[str, tuple[Leg, OrderIntent]] = {}
        for intent, fired in adopted:
            trade = touched[intent.trade_id] = self.trades[intent.trade_id]
            if intent.leg == "entry":
                trade.entry_working = True
                continue
            leg = trade.leg(intent.leg)
            leg.fired, leg.inflight = max(leg.fired, fired), leg.inflight + intent.qty
            self.book.remove(leg.level_id)
            if leg.terminal:
                terminal.setdefault(trade.id, (leg, intent))
        for trade_id, (leg, intent) in terminal.items():
            trade = touched[trade_id]
            rule = "time_stop" if leg is trade.time_leg else self.stops.fired_rule(trade)
            self._fire_terminal(trade, leg, intent.trigger or TriggerInfo(rule, None, None, -1, self._clock()))
        for trade in touched.values():
            self._refresh_state(trade)

    def resume_closing(self, trade: Trade) -> None:
        """After a restart: a trade that was closing with nothing in flight gets its exit sent again."""
        if trade.closing and trade.state.automated and trade.inflight <= 0 and trade.open_qty > 0:
            leg = trade.stop or trade.time_leg or (trade.targets[0] if trade.targets else None)
            if leg is not None:
                self._fire_terminal(trade, leg, TriggerInfo(trade.close_reason, None, None, -1, self._clock()))

    # ----------------------------------------------------------------------------------------- queries

    def effective_stop(self, trade: Trade) -> EffectiveStop | None:
        """Where the trade is protected now (None: no stop armed, or the trade is closing, halted or over)."""
        if trade.closing or not trade.state.automated:
            return None
        return self.stops.effective(trade)

    def stop_price(self, trade: Trade) -> Decimal | None:
        """The effective protective stop as a price, for people (None: no stop armed)."""
        stop = self.effective_stop(trade)
        return None if stop is None else self._grid(trade.symbol).price(trade.sign * stop.level_x)

    def grid(self, symbol: str) -> PriceGrid:
        """The symbol's price grid: how its prices and the core's units convert."""
        return self._grid(symbol)

    def distance_to_stop(self, trade: Trade, tick: Tick | None = None) -> float:
        """(price - stop) / ATR, signed so that small means about to be stopped out; +inf if no stop."""
        tick = tick or self._quote(trade.symbol)
        if self.effective_stop(trade) is None or tick is None:
            return math.inf
        return self.stops.distance(trade, tick)

    def symbol_risk_at(self, symbol: str, tick: Tick) -> float:
        """Distance to the nearest stop of ``symbol`` in ATR at ``tick``: the batch priority (O(1))."""
        return self.stops.symbol_risk(tick)

    def guard(self, symbol: str) -> Guard:
        return self.guards.guard(symbol)

    def watch_guards(self, listener: Callable[[str], None]) -> None:
        """``listener`` is told each symbol whose guard changed (the tick handler keeps a copy)."""
        self.guards.listener = listener

    def marks_for(self, symbol: str) -> Marks:
        return self.stops.marks_for(symbol)

    def symbols_in(self, states: Collection[TradeState]) -> list[str]:
        """The symbols with a trade in one of ``states`` - live states only: a final one is not indexed
        (``core.live_trades``: counts per symbol, no walk over the trades)."""
        return self.live.symbols_in(states)

    def trades_in(self, symbol: str, states: Collection[TradeState]) -> list[Trade]:
        """The trades of ``symbol`` in one of ``states`` (live states only, as ``symbols_in``)."""
        return self.live.trades_in(symbol, states)

    def live_trades(self) -> list[Trade]:
        """The trades not over, oldest first (a copy of the index's list: no walk over the trades)."""
        return self.live.trades()

    # --------------------------------------------------------------------------------------- internals

    def _refresh_state(self, trade: Trade) -> None:
        if not trade.state.automated:  # over, or halted (only a person ends a halt)
            return
        before = trade.state
        if trade.entry_filled <= 0:
            trade.state = TradeState.PENDING_ENTRY
        elif trade.open_qty <= 0 and not trade.entry_working and trade.inflight <= 0:
            trade.state = TradeState.CLOSED
            trade.close_reason = trade.close_reason or "take_profit"
            self.stops.ungroup(trade)
            for leg in trade.legs():
                self.book.remove(leg.level_id)
            self.stops.track(trade)
        elif trade.inflight > 0 or trade.closing:
            trade.state = TradeState.EXITING
        else:
            trade.state = TradeState.OPEN
        if trade.state is not before:
            self._emit(trade, "state", {"from": before.value, "to": trade.state.value})

    def _emit(self, trade: Trade, kind: str, data: dict[str, Any]) -> None:
        record = {"ts_ns": self._clock(), "event": kind, **data}
        trade.history.append(record)
        if self.on_event is not None:
            self.on_event(trade, kind, record)


def _crossing(grid: PriceGrid, trade: Trade, leg: Leg, rule: str, tick: Tick, price: int) -> TriggerInfo:
    """Why a booked leg fired: its level and the tick's price that reached it, as prices."""
    level = None if leg.level_x is None else grid.price(trade.sign * leg.level_x)
    return TriggerInfo(rule, level, grid.price(price), tick.seq, tick.ts_ns)
