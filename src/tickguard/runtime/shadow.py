"""Shadow orders: every live trade's exit pre-validated with the broker's what-if, so it is accepted when it fires.

Why: an exit the broker refuses (margin, a precautionary size or price limit set in TWS) is learnt about when the
stop fires - the worst moment: the position is unprotected while the retry policy escalates
(``core/exit_orders.py``).  Asking IB's what-if about the very order the stop would send, ahead of time, turns
that into an ERROR line a person can act on while the price is still far from the stop.

The rule, per live trade with an open position and nothing closing it yet:

* the order checked is the one its stop (or time) leg would send now: same action, account, quantity (what is open
  and not already in flight, in whole lots) and type and limit as ``ExitPolicy`` would price it from the last
  quote (``stop_exit_order``);
* it is checked at the first look after the trade appears, again every ``interval_ns``, and sooner - but no more
  often than every ``min_gap_ns`` - when its exit changed (quantity, order type, account, stop level: a trailing
  stop moves on every new high, and a what-if per move would be a flood) or its last check gave no verdict;
* looks happen every ``scan_ns`` (``on_time`` is O(1) in between, the tick path pays nothing); checks run as
  background tasks, at most ``max_in_flight`` at once and at most one per ``start_gap_ns`` (the IB adapter queues
  each in the budget's WHAT_IF lane, behind every exit, cancel and entry), and the engine's loop never awaits one.
  Why the start pace as well: a gateway that answers at once (a local one, the simulator) would otherwise let a
  first look at thousands of trades run back to back, each what-if an order to encode and an answer to decode on
  the engine's one thread - time the tick path needed (bench/wire_to_wire.py: a fifth of the loop at 5,000
  trades).  A first look at N trades takes N x ``start_gap_ns``;
* a verdict: ``accepted``, ``refused`` (with the broker's reason) or ``error`` (no answer: timeout, connection
  down, the budget's what-if lane full) - a failure is a verdict, never an exception out of the loop;
* a refusal is logged at ERROR once per change of reason (figures aside: "needs 29,197" and "needs 29,204" are
  one reason), its clearing at INFO; trades no longer live are forgotten.

The conversion of an intent into the ``BrokerOrder`` that leaves is the executor's (``broker_order``): the order
checked is the order that would be sent, field for field.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from tickguard.adapters.broker import BrokerOrder, WhatIf
from tickguard.core.exit_sizing import whole_lots
from tickguard.core.model import OrderIntent, OrderType, PriorityClass, Tick
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import Trade
from tickguard.runtime.order_executor import broker_order

log = logging.getLogger(__name__)

NS = 1_000_000_000
ACCEPTED, REFUSED, ERROR, NONE = "accepted", "refused", "error", "none"
VERDICTS = (ACCEPTED, REFUSED, ERROR)

WhatIfFn = Callable[[BrokerOrder], Awaitable[WhatIf]]
ExitOrderFn = Callable[[Trade], BrokerOrder | None]
ExitKeyFn = Callable[[Trade], tuple[Any, ...] | None]
LOOK_SLICE = 50  # trades looked at per engine step: a look at thousands is spread over steps, never a stall (0.4 ms)


class TradeSource(Protocol):
    """What the checker reads of the trade manager."""

    def live_trades(self) -> list[Trade]:
        """A new list each call: the look consumes it (reversed and popped in place)."""
        ...

    def stop_price(self, trade: Trade) -> Decimal | None: ...


@dataclass(slots=True, frozen=True)
class Snapshot:
    """The last what-if verdict of one trade's exit, and the order it was about."""

    verdict: str  # accepted | refused | error
    reason: str  # the broker's text (a refusal's reason, an acceptance's warning) or what went wrong
    checked_ns: int
    order: BrokerOrder


@dataclass(slots=True)
class _Tracked:
    trade: Trade
    first_seen_ns: int
    exit: tuple[Any, ...]  # the exit as the last look saw it (limit price aside: it moves with every quote)
    checked_exit: tuple[Any, ...] | None = None  # ... and as its last check asked about it
    started_ns: int = 0
    alerted: str | None = None  # the standing refusal's reason, figures aside (logged once)
    look: int = 0  # the last look that saw it with an exit to check


def stop_exit_order(trades: TradeManager, quote: Callable[[str], Tick | None], lot_size: Callable[[str], Decimal],
                    to_order: Callable[[OrderIntent], BrokerOrder] = broker_order) -> ExitOrderFn:
    """The order a trade's stop (or time) leg would send if it fired now, as ``TradeManager._fire_terminal`` and
    ``_send_exit`` build it; None when nothing would be sent (no open quantity, already closing, halted).  A trade
    with no stop or time leg gets the order that would close it all the same way."""
    policy = trades.exit_policy

    def build(trade: Trade) -> BrokerOrder | None:
        if trade.closing or not trade.state.automated:
            return None
        qty = whole_lots(trade.open_qty - trade.inflight, lot_size(trade.symbol))
        if qty <= 0:
            return None
        leg = trade.stop or trade.time_leg
        limit = policy.limit(leg.failures if leg else 0, quote(trade.symbol), trades.grid(trade.symbol), trade.sign)
        req = trade.request
        name = leg.name if leg else "close"
        return to_order(OrderIntent(
            key=f"{trades.key_prefix}{trade.id}:{name}:what-if", trade_id=trade.id, leg=name, user=req.user,
            account=req.account or "", symbol=trade.symbol, action=req.side.exit_action, qty=qty,
            order_type=OrderType.MARKET if limit is None else OrderType.LIMIT, limit_price=limit,
            priority=PriorityClass.WHAT_IF, created_ns=0))  # never journaled: no creation time to keep

    return build


def stop_exit_key(trades: TradeManager) -> ExitKeyFn:
    """What identifies a trade's exit between two looks, cheaply (no order is built: the look runs over every live
    trade): None when nothing would be sent, else its account, the quantity not in flight and the stop level."""
    level_x = trades.stops.level_x

    def key(trade: Trade) -> tuple[Any, ...] | None:
        if trade.closing or not trade.state.automated:
            return None
        qty = trade.open_qty - trade.inflight
        if qty <= 0:
            return None
        return trade.request.account, qty, level_x(trade)

    return key


def describe(order: BrokerOrder) -> str:
    """An order for people: ``SELL 100 SIM001 LMT 99.98 (account DU1)``."""
    price = f" {order.limit_price}" if order.limit_price is not None else ""
    account = f" (account {order.account})" if order.account else ""
    return f"{order.action.value} {order.qty} {order.symbol} {order.order_type.value}{price}{account}"


def _figures_aside(reason: str) -> str:
    return re.sub(r"\d[\d.,]*", "#", reason)


class ShadowChecker:
    def __init__(self, what_if: WhatIfFn, trades: TradeSource, clock: Callable[[], int], interval_ns: int,
                 max_in_flight: int, exit_order: ExitOrderFn, *, scan_ns: int = 2 * NS, min_gap_ns: int = 30 * NS,
                 timeout_s: float = 30.0, exit_key: ExitKeyFn | None = None, start_gap_ns: int = 0) -> None:
        """``what_if``: the broker's (``broker.what_if``); ``clock``: the broker's (``broker.now_ns``), which stamps
        verdicts; ``exit_order``: the order a trade's exit would be now (``stop_exit_order``); ``timeout_s``: wall
        seconds a check may take before it is an ``error`` (the IB adapter's own request timeout and what-if wait
        are shorter: this is the bound for any broker)."""
        if max_in_flight < 1 or interval_ns <= 0 or scan_ns <= 0 or start_gap_ns < 0:
            raise ValueError("max_in_flight, interval_ns and scan_ns must be positive, start_gap_ns not negative")
        self._what_if = what_if
        self._trades = trades
        self._clock = clock
        self.interval_ns = interval_ns
        self.max_in_flight = max_in_flight
        self._exit_order = exit_order
        self._exit_key: ExitKeyFn = exit_key or self._key_of_order
        self._look: list[Trade] = []  # what is left of the look under way (LOOK_SLICE trades per step), last first
        self._look_no = 0  # the look under way (or the last one)
        self.scan_ns = scan_ns
        self.min_gap_ns = min_gap_ns
        self.timeout_s = timeout_s
        self.state: dict[str, Snapshot] = {}  # trade id -> its exit's last verdict
        self.checks: collections.Counter[str] = collections.Counter()  # checks made by verdict, since the start
        # the trades with an exit to check, those the look under way saw last: the ones it did not see are at the
        # front when it ends - forgotten without a walk over the thousands it did see (``on_time``)
        self._tracked: collections.OrderedDict[str, _Tracked] = collections.OrderedDict()
        self._queue: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._next_scan = 0
        self.start_gap_ns = start_gap_ns
        self._next_start = 0  # no check starts before this (the start pace)

    # ------------------------------------------------------------------------------------------ time

    def next_deadline(self) -> int:
        if self._queue and len(self._running) < self.max_in_flight and self._next_start < self._next_scan:
            return self._next_start  # a queued check may start then
        return self._next_scan

    def on_time(self, now_ns: int) -> None:
        """Look at the live trades when due - ``LOOK_SLICE`` of them per call, the rest on the next steps (the
        deadline stays now until the look is done): queue those due a check, forget those gone, start what fits."""
        if now_ns < self._next_scan:
            if self._queue and now_ns >= self._next_start:
                self._start_checks()
            return
        tracked = self._tracked
        if not self._look:
            self._look = self._trades.live_trades()
            self._look.reverse()  # taken from the end, in order: in place (a copy would touch every trade again)
            self._look_no += 1
        look, look_no = self._look, self._look_no
        part = [look.pop() for _ in range(min(LOOK_SLICE, len(look)))]  # no copy of the rest per step
        due: list[tuple[int, int, str]] = []
        for trade in part:
            exit_ = self._exit_key(trade)
            if exit_ is None:
                continue
            entry = tracked.get(trade.id)
            if entry is None:
                entry = tracked[trade.id] = _Tracked(trade, now_ns, exit_)
            else:
                tracked.move_to_end(trade.id)
            entry.trade, entry.exit, entry.look = trade, exit_, look_no
            rank = self._rank(trade.id, entry, now_ns)
            if rank is not None and trade.id not in self._queued and trade.id not in self._running:
                due.append((rank, entry.started_ns, trade.id))
        for _, _, trade_id in sorted(due):  # never checked first, then changed or without a verdict, then oldest
            self._queue.append(trade_id)
            self._queued.add(trade_id)
        if self._look:
            self._next_scan = now_ns  # the rest of this look on the next step
        else:
            self._next_scan = now_ns + self.scan_ns
            # those this look did not see (over, closing, nothing to sell) are the front of ``tracked``: each
            # entry it saw went to the back.  The walk stops at the first one it saw.
            gone = []
            for trade_id, entry in tracked.items():
                if entry.look == look_no:
                    break
                gone.append(trade_id)
            for trade_id in gone:
                self._forget(trade_id)
        self._start_checks()

    def _key_of_order(self, trade: Trade) -> tuple[Any, ...] | None:
        """The exit's identity from the order itself (when no cheaper ``exit_key`` is given)."""
        order = self._exit_order(trade)
        if order is None:
            return None
        return (order.account, order.symbol, order.action, order.qty, order.order_type, self._trades.stop_price(trade))

    def _rank(self, trade_id: str, entry: _Tracked, now_ns: int) -> int | None:
        """How urgent a check of this trade is (None: not due)."""
        if entry.checked_exit is None:
            return 0
        since = now_ns - entry.started_ns
        snap = self.state.get(trade_id)
        unsure = entry.exit != entry.checked_exit or (snap is not None and snap.verdict == ERROR)
        if unsure and since >= self.min_gap_ns:
            return 1
        return 2 if since >= self.interval_ns else None

    # ---------------------------------------------------------------------------------------- checks

    def _start_checks(self) -> None:
        """Start queued checks while fewer than ``max_in_flight`` run; each order is built as it starts, so it is
        the exit as it would go then (a trade closed meanwhile is skipped).  Outside a running event loop (a
        synchronous test stepping the engine) nothing starts: the queue waits for the loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        while self._queue and len(self._running) < self.max_in_flight:
            now = self._clock()
            if now < self._next_start:
                return  # paced: the engine's next step after ``next_deadline`` starts it
            trade_id = self._queue.popleft()
            self._queued.discard(trade_id)
            entry = self._tracked.get(trade_id)
            order = None if entry is None else self._exit_order(entry.trade)
            if entry is None or order is None:
                continue
            entry.checked_exit, entry.started_ns = self._exit_key(entry.trade), now
            self._next_start = now + self.start_gap_ns
            task = loop.create_task(self._check(trade_id, order), name=f"what-if {trade_id}")
            self._running[trade_id] = task
            task.add_done_callback(functools.partial(self._finished, trade_id))

    async def _check(self, trade_id: str, order: BrokerOrder) -> None:
        try:
            answer = await asyncio.wait_for(self._what_if(order), self.timeout_s)
        except TimeoutError:
            verdict, reason = ERROR, f"no answer within {self.timeout_s:g}s"
        except Exception as exc:  # connection down, the budget's lane full, no contract: no verdict, no crash
            verdict, reason = ERROR, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            verdict = ACCEPTED if answer.accepted else REFUSED
            reason = answer.warning or ("" if answer.accepted else "refused, no reason given")
        self._record(trade_id, Snapshot(verdict, reason, self._clock(), order))

    def _finished(self, trade_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(trade_id) is task:
            del self._running[trade_id]
        if task.cancelled():
            return
        if task.exception() is not None:  # a bug in recording, not a broker failure: said, and the checks go on
            log.error("shadow check of trade %s failed", trade_id, exc_info=task.exception())
        self._start_checks()

    def _record(self, trade_id: str, snap: Snapshot) -> None:
        self.checks[snap.verdict] += 1
        entry = self._tracked.get(trade_id)
        if entry is None:  # no longer live: forgotten while its check ran
            return
        before = self.state.get(trade_id)
        self.state[trade_id] = snap
        trade = entry.trade
        if snap.verdict == REFUSED:
            reason = _figures_aside(snap.reason)
            if entry.alerted != reason:
                entry.alerted = reason
                log.error("EXIT WOULD BE REFUSED: trade %s (%s): the broker's what-if refuses its exit %s: %s - the "
                          "stop may not get out when it fires; fix it now (margin, TWS precautionary limits)",
                          trade.id, trade.symbol, describe(snap.order), snap.reason)
        elif snap.verdict == ACCEPTED and entry.alerted is not None:
            entry.alerted = None
            log.info("trade %s (%s): its exit %s is accepted by the what-if again", trade.id, trade.symbol,
                     describe(snap.order))
        elif snap.verdict == ERROR and (before is None or before.verdict != ERROR):
            log.warning("trade %s (%s): what-if of its exit %s gave no verdict (%s); asked again in %gs", trade.id,
                        trade.symbol, describe(snap.order), snap.reason, self.min_gap_ns / NS)

    def _forget(self, trade_id: str) -> None:
        entry = self._tracked.pop(trade_id)
        self.state.pop(trade_id, None)
        if trade_id in self._queued:
            self._queued.discard(trade_id)
            self._queue.remove(trade_id)
        if entry.alerted is not None:
            log.info("trade %s (%s) has no exit to check any more (closing or closed): its refused-exit alert ends",
                     trade_id, entry.trade.symbol)

    # ------------------------------------------------------------------------------------- reporting

    def summary(self, now_ns: int) -> tuple[dict[str, int], int]:
        """For metrics, as of the last look: live trades by verdict ("none": not checked yet), and the age of the
        oldest verdict - a trade not checked yet counts from when it was first seen, so a checker that falls
        behind shows as an age, not as a zero."""
        counts = dict.fromkeys((*VERDICTS, NONE), 0)
        oldest = 0
        for trade_id, entry in self._tracked.items():
            snap = self.state.get(trade_id)
            counts[snap.verdict if snap is not None else NONE] += 1
            oldest = max(oldest, now_ns - (snap.checked_ns if snap is not None else entry.first_seen_ns))
        return counts, oldest

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def settle(self) -> None:
        """Wait until no check runs and none is queued to start (tests; a shutdown that lets them finish)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def cancel(self) -> None:
        """Stop every check in flight (shutdown): no verdict is recorded for them."""
        self._queue.clear()
        self._queued.clear()
        for task in list(self._running.values()):
            task.cancel()
