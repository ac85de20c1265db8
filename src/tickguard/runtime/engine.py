"""Composition root: builds every component from the settings and runs the event loop.

One loop, one task: take what the broker has ready, conflate ticks, evaluate the dirty symbols most at
risk first, hand intents to the executor, fire timers.  Nothing else constructs adapters.

Size: a little over 500 lines - the wiring of every part and the step's ordering rules (when a book, an exit,
a commit may happen) in one place; each part with logic of its own is a module already.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import functools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tickguard.adapters.broker import (
    BookMark,
    Broker,
    BrokerError,
    CommissionEvent,
    ContractInfo,
    FillEvent,
    KnownToEngine,
    NoticeEvent,
    OrderBook,
    OrderStatusEvent,
    UnknownSymbol,
)
from tickguard.config import Settings
from tickguard.core import volatility
from tickguard.core.entry_breaker import EntryBreaker
from tickguard.core.exit_orders import ExitAlert
from tickguard.core.message_budget import MessageBudget
from tickguard.core.model import OrderIntent, Tick
from tickguard.core.order_efficiency import EfficiencyTracker
from tickguard.core.order_state import OrderStatus
from tickguard.core.price_grid import CENT, PriceGrid
from tickguard.core.throttle import Lane
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_checks import TradeRejected
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import Trade, TradeRequest
from tickguard.core.volatility import VolSnapshot
from tickguard.runtime.entry_guard import EntryGuard
from tickguard.runtime.exit_rehearsal import ExitRehearsal
from tickguard.runtime.gc_policy import CollectorPolicy
from tickguard.runtime.journal_recorder import JournalRecorder
from tickguard.runtime.monitors import make_shadow, make_watchdog
from tickguard.runtime.order_executor import OrderExecutor
from tickguard.runtime.order_record import DuplicateIntent, OrderRecord
from tickguard.runtime.reconciliation import Reconciler
from tickguard.runtime.recovery import (
    RecoveryReport,
    reconcile,
    remember_orders_over,
    restore,
    unjournaled_executions,
)
from tickguard.runtime.telemetry import Telemetry
from tickguard.runtime.vol_refresh import VolatilityRefresher
from tickguard.runtime.watchdog import MarketDataHealth, Watchdog
from tickguard.store.journal import Journal

log = logging.getLogger(__name__)
_NO_BATCH = contextlib.nullcontext()  # a step's transaction without a journal


@dataclass(slots=True)
class EngineStats:
    notices: list[tuple[int, int, str]] = field(default_factory=list)
    rejected_requests: list[tuple[TradeRequest, str]] = field(default_factory=list)


class Engine:
    def __init__(self, settings: Settings, broker: Broker, tick_sink: Callable[[Tick], None] | None = None,
                 journal: Journal | None = None):
        self.settings = settings
        self.broker = broker
        self.journal = journal
        self.contracts: dict[str, ContractInfo] = {}
        self._grids: dict[str, PriceGrid] = {}
        self.vol: dict[str, VolSnapshot] = {}
        eng = settings.engine
        # In every idempotency key: the journal's id, or without a journal one of this process's own.
        self.instance_id = journal.journal_id if journal is not None else secrets.token_hex(4)
        self.trades = TradeManager(
            clock=broker.now_ns,
            volatility=self.vol.get,
            quote=self._quote,
            lot_size=lambda s: self.contracts[s].lot_size if s in self.contracts else Decimal(1),
            grid=self.grid,
            exit_order_type=eng.exit_order_type,
            exit_limit_offset=eng.exit_limit_offset,
            retry_backoff_ns=int(eng.exit_retry_backoff_ms * 1e6),
            instance_id=self.instance_id,
        )
        self.ticks = TickHandler(self.trades, mode=eng.tick_mode, window_ns=int(eng.batch_window_ms * 1e6),
                                 after_symbol=self._flush)
        # One budget for every message to the broker (core/throttle.py), in the broker's pacing clock (wall time at
        # IB, virtual time in the simulator); the IB adapter queues its own requests in it too.
        self._pacing_clock: Callable[[], int] = getattr(broker, "pacing_clock", broker.now_ns)
        self.budget = MessageBudget(settings.throttle.limits(), self._pacing_clock)
        if hasattr(broker, "use_budget"):
            broker.use_budget(self.budget)
        thr = settings.throttle  # flood control: which accounts may open new trades (runtime/entry_guard.py)
        self.guard = EntryGuard(self.trades, EntryBreaker(thr.breaker()),
                                EfficiencyTracker(thr.efficiency_max, thr.efficiency_min_orders), broker.now_ns,
                                self._account_of)
        self.executor = OrderExecutor(
            broker, self.guard, broker.now_ns, max_attempts=eng.max_order_attempts,
            retry_backoff_ns=int(eng.order_retry_backoff_ms * 1e6), journal=journal, budget=self.budget,
        )
        self.recorder: JournalRecorder | None = None
        # figures for metrics (runtime/telemetry.py): IB stamps ticks with the wall clock, the simulator does not
        self.telemetry = Telemetry(wall_ticks=getattr(broker, "wall_clock_ticks", False))
        if journal is not None:
            journal.after_commit.append(self.telemetry.on_commit)
            self.recorder = JournalRecorder(journal, self.trades,
                                            int(settings.journal.snapshot_interval_ms * 1e6))
            self.trades.on_event = self.recorder.on_trade_event
            self.executor.on_event = self.recorder.on_order_event
        self.recovery: RecoveryReport | None = None
        self.exit_alerts: list[ExitAlert] = []  # every refused exit of the run, newest last
        self.stats = EngineStats()
        self.vol_history: list[tuple[int, str, float, float]] = []
        vcfg = settings.volatility
        self.refresher = VolatilityRefresher(vcfg.rule(), int(vcfg.refresh_interval_s * 1e9), self._apply_volatility,
                                             self.vol.get, self.grid) if vcfg.intraday else None
        self._tick_sink = tick_sink
        self._scheduled: list[tuple[int, TradeRequest]] = []
        self.watchdog = make_watchdog(settings, broker, self.trades, self.ticks.quote,  # runtime/monitors.py
                                      self._journal_health if journal is not None else None)
        self.shadow = make_shadow(settings, broker, self.trades, self.ticks.quote, self.contracts)  # exits' what-if
        self.health = self.watchdog.health if self.watchdog is not None else MarketDataHealth()
        self._resubscribing: set[asyncio.Task[None]] = set()
        self.reconciler = Reconciler(self.executor, self.trades, broker.now_ns, self.instance_id,
                                     int(eng.reconcile_interval_s * 1e9), int(eng.reconcile_retry_s * 1e9),
                                     int(eng.ack_timeout_s * 1e9), eng.reconcile_full_every)
        self.reconciliation = self.reconciler.state  # last pass, differences, incomplete (new entries wait)
        self.executor.on_sent = self._on_sent
        self.executor.on_cancel_sent = lambda record: self.guard.sent(record.intent, cancel=True)
        self.reconciler.cancel_stray = self._cancel_stray
        if journal is not None:  # a complete book after an incomplete start lists the day's orders of trades over
            self.reconciler.remember_over = functools.partial(remember_orders_over, executor=self.executor,
                                                              journal=journal)
        self._book_task: asyncio.Task[OrderBook | BaseException] | None = None
        # what a running pass's book may leave out (adapters/broker.py): start-up's recovery reads everything
        self._known = KnownToEngine(self.executor.applied_execs, self.executor.holds_final)
        self._held_entries: list[OrderIntent] = []  # entries waiting for a complete reconciliation
        self.gc = CollectorPolicy(eng.gc_freeze_interval_s)
        self.rehearsal = None if eng.exit_rehearsal_ms <= 0 else ExitRehearsal(  # what the broker offers: optional
            self.trades, self.executor.session, self.recorder, getattr(broker, "rehearse_order", None),
            eng.exit_rehearsal_ms / 1e3, getattr(broker, "has_events", None), getattr(broker, "quote_age_s", None))
        self._step_ticks: list[Tick] = []

    def _journal_health(self, kind: str, now_ns: int, trades: list[Trade], data: dict) -> None:
        assert self.journal is not None
        for t in trades:
            self.journal.event(kind, now_ns, data, t.id, None, t.request.user, t.request.account or "")

    # ------------------------------------------------------------------------------------------ set-up

    async def start(self, symbols: list[str], attempts: int = 1) -> dict[str, str]:
        """Connect, then qualify each symbol, size its volatility and subscribe, retrying ``attempts`` times.

        Returns the symbols that cannot be traded with the reason: the caller must say so loudly and never
        report itself ready while one of them is missing.
        """
        await self.broker.connect()
        if self.journal is not None:
            # this engine's turn from here on (store/engine_lock.py's fence), before the journal is read: an engine
            # still running on it commits - and sends - nothing more; a start that failed before now left it alone
            self.journal.take_over()
            self.recovery = restore(self.journal, self.trades, self.executor)
            restored = {t.symbol for t in self.trades.live_trades()}
            symbols = list(dict.fromkeys([*symbols, *sorted(restored)]))
        failed: dict[str, str] = {}
        for symbol in symbols:
            for attempt in range(1, attempts + 1):
                try:
                    await self._prepare(symbol)
                    failed.pop(symbol, None)
                    break
                except UnknownSymbol as exc:
                    failed[symbol] = str(exc)
                    break  # retrying will not make an unknown symbol known
                except (BrokerError, ValueError, TimeoutError) as exc:
                    failed[symbol] = f"{exc} (attempt {attempt}/{attempts})"
            if symbol in failed:
                self.vol.pop(symbol, None)
                log.error("cannot trade %s: %s", symbol, failed[symbol])
                if symbol in self.contracts and any(t.symbol == symbol for t in self.trades.live_trades()):
                    # open trades hold journaled levels: keep watching their quotes so those exits fire
                    await self._subscribe_anyway(symbol)
                else:
                    self.contracts.pop(symbol, None)
        book: OrderBook | None = None
        if self.recovery is not None:
            book = await self._startup_book()
            self.reconciler.baseline(book, self.broker.now_ns())  # an incomplete book: new entries wait
            assert self.journal is not None  # recovery is a journal's
            remember_orders_over(book, self.executor, self.journal)
            self.recovery.mismatches += unjournaled_executions(book, self.executor)
            with self._batch():  # what it re-sends goes out when this commits (the journal's after-commit hook)
                reconcile(book, self.trades, self.executor, self.recovery, self._cancel_stray)
                self._flush()
            self.reconciler.defer(self.recovery.deferred)
            lines = self.recovery.lines()
            log.info("%s", lines[0])
            for line in lines[1:]:
                (log.error if line.startswith("UNRECONCILED") else log.warning)("%s", line)
        else:
            self.reconciler.baseline(None, self.broker.now_ns())
        # Start-up objects (contracts, bars, restored trades, imported modules) live for the whole run: out of the
        # collector's sight (runtime/gc_policy.py), then again every [engine] gc_freeze_interval_s
        self.gc.freeze()
        return failed

    async def _startup_book(self) -> OrderBook:
        """The broker's order book for recovery; one that cannot be read is an incomplete, empty one - nothing
        in flight is re-sent blind, and the first complete reconciliation decides (runtime/reconciliation.py)."""
        try:
            return await self.broker.order_book()
        except (BrokerError, TimeoutError, ConnectionError) as exc:
            log.error("recovery: the broker's order book cannot be read (%s); nothing in flight is re-sent until "
                      "it can", exc)
            return OrderBook({}, {}, [], {}, complete=False)

    async def _prepare(self, symbol: str) -> None:
        """Qualify, size the volatility and subscribe.  If the bars cannot be had (IB pacing after a quick
        restart, an HMDS outage) the journaled volatility is used, loudly: a trade that is already open must
        keep its exits armed and watched whatever the history farm says."""
        vcfg = self.settings.volatility
        self.contracts[symbol] = await self.broker.qualify(symbol)
        try:
            bars = await self.broker.daily_bars(symbol, vcfg.history_days)
            snap = volatility.snapshot(symbol, bars, vcfg.atr_period, vcfg.adr_period, self.broker.now_ns())
            if self.journal is not None:
                self.journal.save_volatility(symbol, snap.atr, snap.adr, snap.ts_ns)
        except (BrokerError, ValueError, TimeoutError) as exc:
            saved = self.journal.load_volatility(symbol) if self.journal is not None else None
            if saved is None:
                raise
            snap = VolSnapshot(symbol, saved["atr"], saved["adr"], saved["ts_ns"])
            log.warning("%s: no fresh daily bars (%s); using the journaled ATR %.4f from %s", symbol, exc,
                        snap.atr, dt.datetime.fromtimestamp(snap.ts_ns / 1e9, tz=dt.UTC).isoformat())
        self.vol[symbol] = snap
        if self.refresher is not None:
            self.refresher.set_daily(snap)
        await self.broker.subscribe(symbol)

    async def _subscribe_anyway(self, symbol: str) -> None:
        try:
            await self.broker.subscribe(symbol)
        except (BrokerError, TimeoutError) as exc:
            log.error("%s: cannot even subscribe to quotes for the open trades: %s", symbol, exc)

    def _on_sent(self, record: OrderRecord) -> None:
        self.telemetry.on_sent(record.intent, record.order_id, self.broker.now_ns(), record.decided_ns)
        record.decided_ns = None  # a later re-send of it is no longer this decision's
        self.reconciler.on_sent(record)  # its acknowledgement deadline starts
        self.guard.sent(record.intent)  # the account's order-efficiency ratio counts it

    def _account_of(self, item: OrderIntent | TradeRequest) -> str:
        return item.account or self.settings.ib.account

    def _open(self, request: TradeRequest) -> Trade:
        """The trade manager accepts the trade, unless its account's entries wait (runtime/entry_guard.py)."""
        why = self.guard.refuse_entry(self._account_of(request), self.broker.now_ns())
        if why is not None:
            raise TradeRejected(why)
        return self.trades.submit(request)

    def submit(self, request: TradeRequest) -> Trade:
        """Accept a trade (its entry goes out at once) or raise ``TradeRejected`` with the reason."""
        try:
            with self._batch():
                trade = self._open(request)
                self._flush()
        except TradeRejected as exc:
            self.stats.rejected_requests.append((request, str(exc)))
            raise
        return trade

    def schedule(self, at_ns: int, request: TradeRequest) -> None:
        """Submit ``request`` when the broker clock reaches ``at_ns`` (demo trades open over time)."""
        bisect.insort(self._scheduled, (at_ns, request), key=lambda item: item[0])  # stable: same time, FIFO

    # -------------------------------------------------------------------------------------------- loop

    async def warm_up(self, symbols: list[str], timeout_s: float) -> list[str]:
        """Run until every symbol has a quote (trades are checked against it), or the timeout; returns the
        symbols still without one."""
        end = self.broker.now_ns() + int(timeout_s * 1e9)
        quote = self.ticks.quote
        while self.broker.now_ns() < end:
            missing = [s for s in symbols if quote(s) is None]
            if not missing:
                return []
            events = await self.broker.next_events(min(end, self.broker.now_ns() + 100_000_000))
            self.step(events)
        return [s for s in symbols if quote(s) is None]

    async def run_until(self, end_ns: int) -> None:
        # no automatic full collection while it runs (runtime/gc_policy.py); exits rehearsed (runtime/exit_rehearsal.py)
        rehearsing = self.rehearsal.running() if self.rehearsal is not None else contextlib.nullcontext()
        with self.gc.watching(), rehearsing:
            await self._run_until(end_ns)

    async def _run_until(self, end_ns: int) -> None:
        broker, budget = self.broker, self.budget
        while broker.now_ns() < end_ns:
            wake = end_ns
            vol_due = self.refresher.next_deadline(broker.now_ns()) if self.refresher is not None else None
            watch_due = self.watchdog.next_deadline() if self.watchdog is not None else None
            check_due = broker.now_ns() + 100_000_000 if self._book_task is not None else None  # poll its result
            for due in (self.trades.next_deadline(), self.executor.next_deadline(), vol_due,
                        self._scheduled[0][0] if self._scheduled else None, watch_due,
                        self.reconciler.next_deadline(), check_due, self._budget_due() if budget.throttle else None,
                        self.shadow.next_deadline() if self.shadow is not None else None):
                if due is not None and due < wake:
                    wake = due
            events = await broker.next_events(wake)
            self.step(events)
            self.gc.maybe_freeze()
            if self.watchdog is not None and self.watchdog.pending:
                self._resubscribe(self.watchdog)
            if self.reconciler.wanted and self._book_task is None:
                await self._check_book()

    async def _check_book(self) -> None:
        """Fetch the broker's order book in the background (runtime/reconciliation.py); a later step applies it."""
        why = self.reconciler.begin()
        (log.debug if why == "interval" else log.info)("reconciliation: asking the broker for its order book (%s)",
                                                       why)  # the routine pass every interval is no event
        self._book_task = asyncio.get_running_loop().create_task(self._fetch_book(self.reconciler.full))
        await asyncio.sleep(0)  # let it start: the loop itself never waits for the answer

    async def _fetch_book(self, full: bool) -> OrderBook | BaseException:
        try:
            return await self.broker.order_book(full, self._known)
        except Exception as exc:  # any failure is an incomplete pass, never a crash of the loop
            return exc

    def _apply_book(self, mark: int | None = None) -> None:
        """Apply the fetched order book: at the start of a step, unless the adapter marked where in its event
        stream the book was read (``BookMark``) - then where ``dispatch`` meets that mark, after the events the
        book already reflects (``mark``: the one met)."""
        task = self._book_task
        if task is None or not task.done():
            return
        book = task.result()
        if isinstance(book, OrderBook) and book.mark is not None and book.mark != mark:
            return  # its mark is still ahead in the stream
        self._book_task = None
        self.reconciler.apply(book, self.broker.now_ns())
        if self._held_entries and not self.reconciliation.incomplete:
            held, self._held_entries = self._held_entries, []
            self.trades.outbox[:0] = held
            self._flush()

    def _resubscribe(self, watchdog: Watchdog) -> None:
        """Renew the subscriptions the watchdog found silent, in the background: the loop never waits on it."""
        symbols, watchdog.pending = watchdog.pending, []
        renew = getattr(self.broker, "resubscribe", None) or self.broker.subscribe
        for symbol in symbols:
            task = asyncio.get_running_loop().create_task(self._renew(renew, symbol))
            self._resubscribing.add(task)
            task.add_done_callback(self._resubscribing.discard)

    @staticmethod
    async def _renew(renew: Callable[[str], Any], symbol: str) -> None:
        try:
            await renew(symbol)
        except (BrokerError, TimeoutError, OSError) as exc:
            log.error("%s: resubscribing to its silent quotes failed: %s", symbol, exc)

    def step(self, events: list) -> None:
        """One engine step: journal and apply the broker's events, evaluate, fire timers.  What was decided is
        sent by the executor when the step's transaction has committed (the journal's after-commit hook), never
        before; without a journal, at once."""
        # the budget holds what the step releases until its end (after the journal's commit): then the most at
        # risk of everything decided goes first
        self.telemetry.step_began()
        with self.gc.paused(), self.budget.holding(), self._batch():  # collected at its end (runtime/gc_policy.py)
            self._apply_book()  # before the events: the book was fetched before they were handed over
            self.dispatch(events)
            now = self.broker.now_ns()
            self.on_time(now)
            if self.recorder is not None:
                self.recorder.flush_moved(now, self._step_ticks)

    def _batch(self) -> contextlib.AbstractContextManager[None]:
        """The step's journal transaction (none without a journal)."""
        return _NO_BATCH if self.journal is None else self.journal.batch()

    def _raise_alerts(self) -> None:
        """Exits the broker refused (core/exit_orders.py): an ERROR line each, at once, kept for views."""
        alerts, self.trades.alerts = self.trades.alerts, []
        for alert in alerts:
            log.error("%s", alert.describe())
        self.exit_alerts.extend(alerts)

    def _cancel_stray(self, order_id: int) -> None:
        """Cancel an order of this journal that no live trade owns (recovery found it at the broker); the cancel
        takes its turn in the message budget like every other."""
        def cancel() -> None:
            try:
                self.broker.cancel_order(order_id)
            except BrokerError as exc:
                log.error("could not cancel stray order %s: %s", order_id, exc)

        self.budget.send(f"stray cancel {order_id}", Lane.CANCEL_MODIFY, cancel)

    def _quote(self, symbol: str) -> Tick | None:
        return self.ticks.quote(symbol)

    def grid(self, symbol: str) -> PriceGrid:
        """The symbol's price grid, from its contract's minimum tick (the broker adapter converts its prices
        with the same tick, so the core's units mean the same on both sides)."""
        grid = self._grids.get(symbol)
        if grid is None:
            contract = self.contracts.get(symbol)
            if contract is None:
                return CENT  # not qualified: nothing of it is armed or priced yet
            grid = self._grids[symbol] = PriceGrid(contract.min_tick)
        return grid

    def dispatch(self, events: list) -> None:
        """Order events first (they happened no later than the ticks beside them), then the ticks."""
        ticks: list[Tick] = []
        sink = self._tick_sink
        bars = self.refresher
        for event in events:
            if isinstance(event, Tick):
                if sink is not None:
                    sink(event)
                ticks.append(event)
            elif isinstance(event, FillEvent):
                self.telemetry.on_fill(event, self.broker.now_ns())
                self.executor.on_fill(event)
            elif isinstance(event, OrderStatusEvent):
                self.telemetry.on_status(event, self.broker.now_ns())
                self.executor.on_status(event)
            elif isinstance(event, CommissionEvent):
                self.executor.on_commission(event)
            elif isinstance(event, NoticeEvent):
                self.stats.notices.append((event.ts_ns, event.code, event.message))
                log.log(event.level, "broker notice %s: %s", event.code, event.message)
                self.reconciler.on_notice(event)
            elif isinstance(event, BookMark):
                self._apply_book(event.token)  # the order events before it are applied, the ones after are not
        if bars is not None and ticks:
            bars.on_ticks(ticks)  # into the intraday bars, in order (the order events beside them do not touch bars)
        self._flush()
        self._step_ticks = ticks  # their symbols' trail marks may have moved (JournalRecorder.flush_moved)
        if ticks:
            began = time.perf_counter_ns()
            self.ticks.process(ticks)
            self.telemetry.evaluated(len(ticks), time.perf_counter_ns() - began)

    def _budget_due(self) -> int | None:
        """When the message budget next lets a queued message go (or an entry's wait runs out), in broker time."""
        due = self.budget.next_deadline_ns()
        return None if due is None else self.broker.now_ns() + max(0, due - self._pacing_clock())

    def on_time(self, now_ns: int) -> None:
        while self._scheduled and self._scheduled[0][0] <= now_ns:
            _, request = self._scheduled.pop(0)
            try:
                self._open(request)
            except TradeRejected as exc:
                self.stats.rejected_requests.append((request, str(exc)))
                log.warning("trade refused: %s", exc)
        self.trades.on_time(now_ns)
        self.executor.on_time(now_ns)
        if self.refresher is not None:
            self.refresher.on_time(now_ns)
        if self.watchdog is not None:
            self.watchdog.on_time(now_ns)
        self.reconciler.on_time(now_ns)
        if self.shadow is not None:
            self.shadow.on_time(now_ns)
        self._flush()

    def _apply_volatility(self, snap: VolSnapshot) -> None:
        """A refreshed volatility: re-size levels (by each rule's policy), journal it, keep its history."""
        self.vol[snap.symbol] = snap
        self.vol_history.append((snap.ts_ns, snap.symbol, snap.atr, snap.adr))
        self.trades.on_volatility(snap)
        if self.journal is not None:
            self.journal.save_volatility(snap.symbol, snap.atr, snap.adr, snap.ts_ns)

    def _flush(self) -> None:
        tm = self.trades
        if tm.alerts:
            self._raise_alerts()
        while tm.outbox or tm.cancels:
            intents, tm.outbox = tm.outbox, []
            exits = False
            for intent in intents:
                exits = exits or intent.is_exit
                if intent.is_exit or not self.reconciliation.incomplete:
                    try:
                        self.executor.submit(intent, self.telemetry.decided(intent, self.ticks.quote))
                    except DuplicateIntent as exc:
                        self._refuse_duplicate(intent, exc)
                else:
                    log.warning("entry %s waits: reconciliation with the broker is incomplete", intent.key)
                    self._held_entries.append(intent)
            cancels, tm.cancels = tm.cancels, []
            for key in cancels:
                self._cancel(key)
            if exits:
                self._release_exits()

    def _refuse_duplicate(self, intent: OrderIntent, exc: DuplicateIntent) -> None:
        """An order decided under a key that is already an order's (a fault: the trade's state and its orders
        disagree) is never sent, and its trade is HALTED with an ERROR and an exit alert - the one trade is left to
        the user, every other trade's exits go on (the exception used to end the step, and the engine, with the
        rest of the step's exits undecided or unsent)."""
        why = f"order {intent.key} decided a second time (its key is already an order's): not sent"
        log.error("%s; trade %s HALTED, left for the user (%s)", why, intent.trade_id, exc)
        self.executor.halted.add(intent.trade_id)  # nothing of it is sent: new, retried, or re-sent
        self.trades.halt(intent.trade_id, why)
        self.trades.on_intent_closed(intent, OrderStatus.CANCELLED, intent.qty, why)  # its quantity is not in flight

    def _release_exits(self) -> None:
        """Exits just decided leave now, not at the end of the step: their writes are committed (the journal's
        receipt releases them to the budget) and the budget lets exits through its hold while it has room
        (``MessageBudget.release_exits``).  ``_flush`` runs between two complete changes - after a symbol's
        ticks, after the step's order events - so a commit here never splits one.  It is an exit's commit
        (``early``): the snapshot of a trade whose only change is the fire follows in the step's own commit, right
        after the send (``journal_recorder``)."""
        if self.journal is not None:
            if not self.executor.exits_waiting():
                return
            self.journal.commit_now(early=True)
        self.budget.release_exits()

    def _cancel(self, key: str) -> None:
        """Cancel an order; an entry still held for reconciliation is dropped, never sent."""
        held = next((i for i in self._held_entries if i.key == key), None)
        if held is None:
            self.executor.cancel(key)
            return
        self._held_entries.remove(held)
        self.trades.on_intent_closed(held, OrderStatus.CANCELLED, held.qty, "cancelled before it was sent")

