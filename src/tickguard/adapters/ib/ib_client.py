"""The ``Broker`` protocol on ``ib_async``: TWS / IB Gateway (paper or live), or tickguard's fake gateway.

ib_async calls back on its own schedule; this adapter turns every callback into an engine event on one
queue, which the engine drains.  It also owns what a broker connection must survive: reconnects with
backoff and jitter, the 1100/1101/1102 connectivity codes, data-farm outages, and reconciliation after a
reconnect (fills that happened while away are applied once, orders that ended while away are closed).  An
execution or order report is applied only if it matches its order in every identifying field (attribution.py).

Size: a little over 500 lines - the connection's life (connect, reconnect, resubscribe, close) and its queue of
events share state with every callback; the parts with logic of their own are the mixins and modules beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal

from ib_async import IB, ContractDetails, LimitOrder, MarketOrder, Order, Ticker, Trade
from ib_async import OrderStatus as IBOrderStatus
from ib_async.ib import StartupFetch, StartupFetchALL
from ib_async.objects import CommissionReport, Fill

from tickguard.adapters.broker import (
    BrokerError,
    BrokerEvent,
    BrokerOrder,
    CommissionEvent,
    NotConnected,
    NoticeEvent,
    OrderStatusEvent,
    UnknownSymbol,
    WhatIf,
)
from tickguard.adapters.ib.attribution import PlacedOrders
from tickguard.adapters.ib.book_changes import BookChanges
from tickguard.adapters.ib.book_reads import BookReads
from tickguard.adapters.ib.contracts import ContractsMixin
from tickguard.adapters.ib.errors import guarded
from tickguard.adapters.ib.farms import FarmTable
from tickguard.adapters.ib.messages import CONNECTIVITY_LOST, ConnectionState, MessagesMixin
from tickguard.adapters.ib.order_status import order_verdict
from tickguard.adapters.ib.pacing import PacingMixin
from tickguard.adapters.ib.placing import SilentClient, place_new
from tickguard.adapters.ib.quotes import QuoteAssembler
from tickguard.adapters.ib.recovery import Placed, RecoveryMixin
from tickguard.adapters.ib.values import account_numbers, account_problem, fill_event, ib_number, wire_price
from tickguard.adapters.trading_hours import us_regular_session
from tickguard.adapters.ttl_cache import TTLCache
from tickguard.config import IBConfig
from tickguard.core.message_budget import MessageBudget
from tickguard.core.model import Bar, OrderType
from tickguard.core.money import ZERO, exact
from tickguard.core.order_state import OrderStatus
from tickguard.core.price_grid import PriceGrid
from tickguard.core.throttle import Lane

log = logging.getLogger(__name__)
_LOOPBACK = frozenset({"", "localhost", "localhost.localdomain", "127.0.0.1", "::1", "[::1]", "0.0.0.0"})

# ib_async's start-up sync, less the account updates: the adapter asks for those itself once it has checked that IB
# manages the configured account (IB may not answer a request for an account it does not manage).
SYNC = StartupFetchALL & ~StartupFetch.ACCOUNT_UPDATES


class IBBroker(ContractsMixin, RecoveryMixin, MessagesMixin, PacingMixin):
    """One IB API connection."""

    name = "ib"

    def __init__(self, cfg: IBConfig, ib: IB | None = None, rng: random.Random | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        self.cfg = cfg
        self._clock = clock or time.time_ns  # tests hand in the fake gateway's virtual clock
        self.wall_clock_ticks = clock is None  # a tick's recv_ns is its arrival on the wall clock (metrics)
        self.farms = FarmTable()  # per data farm: ok / broken / inactive, since when (see farms.py)
        self.ib = ib or IB()
        self.ib.RequestTimeout = cfg.request_timeout_s
        self.state = ConnectionState()
        self._rng = rng or random.Random()
        self._events: list[BrokerEvent] = []
        self._waiter: asyncio.Future[None] | None = None  # next_events waiting for an event (see _wake)
        self._timer: asyncio.TimerHandle | None = None  # next_events' deadline, kept while it stays the same
        self._timer_at: int | None = None  # ... that deadline (ns)
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # ... and the loop it runs on
        self._orders = PlacedOrders()  # by order id, indexed by orderRef
        self._seen_execs: set[str] = set()
        self._book_reads = BookReads()  # the order book's conversions, kept between reconciliation passes
        self._book_changes = BookChanges(self.ib)  # lets a read of the book yield part-way (book_changes.py)
        self._tickers: dict[str, Ticker] = {}
        self._last_tick_wall: dict[str, float] = {}
        self._by_ticker: dict[int, str] = {}
        self._quotes = QuoteAssembler()
        self._last_quote_wall = -math.inf  # time.monotonic() of the last quote handed to the engine (quote_age_s)
        self._silent: SilentClient | None = None  # encodes the exit rehearsal's orders, sends nothing (placing.py)
        self._closing = False
        self._connecting = False  # inside one connection attempt: a drop there fails the attempt, not a reconnect
        self._refused = asyncio.Event()  # 326 inside a connection attempt: it is over, and not retried
        self._history_paced: set[str] = set()
        self._budget: MessageBudget | None = None  # the engine's message budget (pacing.py), once it is handed in
        self.wire_messages = 0
        self._install_wire_count()
        self._held_cancels: dict[int, str] = {}  # order id -> ref: cancels asked while the connection was down
        self._cancels_sent: set[int] = set()  # order ids whose cancel was handed to ib_async (it may be lost)
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.contract_cache: TTLCache[str, ContractDetails] = TTLCache(
            self._load_contract, ttl=cfg.contract_ttl_s, max_stale=cfg.cache_max_stale_s,
            should_invalidate=lambda exc: isinstance(exc, UnknownSymbol), on_change=self._contract_changed,
        )
        self.volatility_cache: TTLCache[tuple[str, int], list[Bar]] = TTLCache(
            self._load_bars, ttl=cfg.volatility_ttl_s, max_stale=cfg.cache_max_stale_s,
            should_invalidate=lambda exc: isinstance(exc, UnknownSymbol),
        )
        ib_ = self.ib
        ib_.pendingTickersEvent += self._on_tickers
        ib_.orderStatusEvent += self._on_status
        ib_.execDetailsEvent += self._on_exec
        ib_.commissionReportEvent += self._on_commission
        ib_.errorEvent += self._on_error
        ib_.disconnectedEvent += self._on_disconnected

    # ------------------------------------------------------------------------------------ connection

    def now_ns(self) -> int:
        return self._clock()

    def regular_session(self, symbol: str, ts_ns: int) -> tuple[int, int] | None:
        """US stocks' regular hours (weekdays 09:30-16:00 New York; holidays not known): see trading_hours.py."""
        return us_regular_session(ts_ns)

    def feed_state(self) -> str:
        trust = "" if self.state.feed_trusted else "feed not trusted (1100 or disconnected); "
        return trust + self.farms.describe(self.now_ns())

    async def connect(self) -> None:
        """Connect, trying ``connect_attempts`` times: a gateway restarting (or still holding a dead
        session of this client id) should not stop an engine that was started a second too early."""
        cfg = self.cfg
        for attempt in range(cfg.connect_attempts):
            self.state.last_error = ""
            try:
                await self._connect_once()
                break
            except (TimeoutError, OSError, ConnectionError) as exc:
                if attempt + 1 >= cfg.connect_attempts:
                    raise BrokerError(f"cannot connect to IB at {cfg.host}:{cfg.port} (client id "
                                      f"{cfg.client_id}) after {attempt + 1} attempt(s): "
                                      f"{self.state.last_error or _connect_hint(exc, cfg)}") from exc
                await asyncio.sleep(self.reconnect_delay(attempt))
        # ib_async 2.1.0 forgets everything when a socket drops (Wrapper.connectionClosed -> reset): its trades
        # now are exactly what IB reported during the sync, so an order that ended while away is not among these.
        working = {t.order.orderId: t.orderStatus.status for t in self._own_trades()}  # not other clients'!
        self._reconcile(set(working))
        self.state.connected = True
        self.state.feed_trusted = True
        self._send_held_cancels(working)

    async def _connect_once(self) -> None:
        """Connect, sync, check the account.  Any failure leaves the connection closed (a wrong account raises
        ``BrokerError``, which is not retried)."""
        cfg = self.cfg
        self._connecting = True
        self._refused.clear()
        try:
            await self._connect_or_refused()
            try:
                problem = account_problem(cfg.account, self.ib.managedAccounts())
                if problem:
                    raise BrokerError(problem)
                if self.default_account:
                    await asyncio.wait_for(self.ib.reqAccountUpdatesAsync(self.default_account), cfg.connect_timeout_s)
            except BaseException:
                self.ib.disconnect()
                raise
        finally:
            self._connecting = False

    async def _connect_or_refused(self) -> None:
        """ib_async's connect, cut short by error 326: IB has refused this client id and closes the socket, but
        ib_async would wait for its start-up until the timeout (and ``connect`` retry it), so a client id already
        in use took a minute to be reported.  It is a ``BrokerError``, not retried: only the user can fix it."""
        cfg = self.cfg
        connecting = asyncio.ensure_future(self.ib.connectAsync(
            cfg.host, cfg.port, cfg.client_id, timeout=cfg.connect_timeout_s, raiseSyncErrors=True, fetchFields=SYNC))
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
            if not connecting.done():
                connecting.cancel()
            await asyncio.gather(connecting, refused, return_exceptions=True)
        if self._refused.is_set():
            self.ib.disconnect()
            raise BrokerError(self.state.last_error)
        connecting.result()  # its own failure (timeout, refused socket), retried by connect()

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._reconnect_task, *self._tasks) if t is not None]  # a resubscription, a renewal
        for task in tasks:  # stopped before the caches they read are closed
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.contract_cache.aclose()
        await self.volatility_cache.aclose()
        if self._held_cancels:
            log.error("closing with cancels never sent to IB (the connection was down): %s",
                      ", ".join(self._held_cancels.values()))
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at, self._timer_loop = None, None, None  # a wait after this arms its own
        self.ib.disconnect()
        self.state.connected = False

    @guarded("disconnect", log)
    def _on_disconnected(self) -> None:
        self.state.connected = False
        self.state.feed_trusted = False
        if self._closing or self._connecting:
            return
        self._emit(NoticeEvent(CONNECTIVITY_LOST, "socket to IB closed; reconnecting", self.now_ns()))
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    def reconnect_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: spreads many clients' reconnects after a gateway restart."""
        base = min(self.cfg.reconnect_max_s, self.cfg.reconnect_initial_s * 2**attempt)
        return base * (1 + self.cfg.reconnect_jitter * (2 * self._rng.random() - 1))

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closing:
            await asyncio.sleep(self.reconnect_delay(attempt))
            attempt += 1
            try:
                await self.connect()
                # a drop while resubscribing fails this attempt, not the reconnecting: this task tries again
                await self._resubscribe_all(cancel_old=False)
            except (BrokerError, ConnectionError, OSError) as exc:
                self.state.last_error = str(exc)
                log.warning("reconnect attempt %d failed: %s", attempt, exc)
                continue
            if not self.ib.isConnected():
                continue
            self.state.reconnects += 1
            self._emit(NoticeEvent(0, f"reconnected after {attempt} attempt(s)", self.now_ns()))
            return

    # ----------------------------------------------------------------------------------- market data

    async def subscribe(self, symbol: str) -> None:
        grid = PriceGrid((await self.qualify(symbol)).min_tick)  # IB's prices become this tick's units
        contract = await self._contract(symbol)
        await self._paced(Lane.DATA, f"market data {symbol}")
        ticker = self.ib.reqMktData(contract, "", False, False)
        self._quotes.reset(symbol, ticker.bid, ticker.ask, grid)
        self._tickers[symbol] = ticker
        self._by_ticker[id(ticker)] = symbol
        self._last_tick_wall[symbol] = time.monotonic()

    async def _resubscribe_all(self, cancel_old: bool = True) -> None:
        """Subscribe everything again.  After a reconnect the old subscriptions died with the socket (and
        ib_async forgot them), so only a 1101 - same socket, data lost - cancels them first."""
        for symbol in list(self._tickers):
            old = self._tickers.pop(symbol)
            self._by_ticker.pop(id(old), None)
            if cancel_old:
                await self._paced(Lane.DATA, f"cancel market data {symbol}")
                with contextlib.suppress(Exception):
                    self.ib.cancelMktData(old.contract)
            await self.subscribe(symbol)

    async def resubscribe(self, symbol: str) -> None:
        """Cancel ``symbol``'s quote subscription (if any) and request it again."""
        old = self._tickers.pop(symbol, None)
        if old is not None:
            self._by_ticker.pop(id(old), None)
            await self._paced(Lane.DATA, f"cancel market data {symbol}")
            with contextlib.suppress(Exception):
                self.ib.cancelMktData(old.contract)
        await self.subscribe(symbol)

    async def _renew_silent(self) -> None:
        """After a recovery message, renew every subscription that has been silent too long."""
        for symbol in self.silent_symbols(self.cfg.stale_feed_s):
            await self.resubscribe(symbol)

    def silent_symbols(self, older_than_s: float) -> list[str]:
        now = time.monotonic()
        return [s for s in self._tickers if now - self._last_tick_wall.get(s, 0.0) >= older_than_s]

    @guarded("quotes", log)
    def _on_tickers(self, tickers: set[Ticker]) -> None:
        """One socket read: every bid / ask / last change in it becomes a Tick, in arrival order (see quotes.py).
        While the feed is not trusted the quotes are still followed, but not emitted."""
        trusted = self.state.feed_trusted
        now = self.now_ns()
        wall = time.monotonic()
        for ticker in tickers:
            symbol = self._by_ticker.get(id(ticker))
            if symbol is None:
                continue
            ticks = self._quotes.assemble(symbol, ticker.ticks, ticker.bid, ticker.ask, ticker.time, now, trusted)
            if trusted and (ticks or self._quotes.known(symbol)):
                self._last_tick_wall[symbol] = self._last_quote_wall = wall
                self._events.extend(ticks)
        if trusted:
            self._wake()

    # ---------------------------------------------------------------------------------------- orders

    @property
    def session_identity(self) -> str:
        """Which IB session orders go through - the client id and the gateway's address: IB shows a client only its
        own open orders and executions, so recovery must know whether an order in flight was placed through this
        one (runtime/recovery.py's ``holds_elsewhere``)."""
        host = self.cfg.host.strip().lower()
        host = "127.0.0.1" if host in _LOOPBACK else host  # one gateway, however its loopback address is spelled
        return f"IB client id {self.cfg.client_id} at {host}:{self.cfg.port}"

    @property
    def default_account(self) -> str:
        """Where an order without an account goes: ``[ib].account``, else the login's only account."""
        managed = self.ib.managedAccounts()
        return self.cfg.account or (managed[0] if len(managed) == 1 else "")

    def _can_send(self) -> bool:
        """Connected, synced and reconciled (``connect`` sets ``state.connected`` last)."""
        return self.state.connected and self.ib.isConnected()

    def place_order(self, order: BrokerOrder) -> int:
        """Send an order; raises ``NotConnected`` (nothing was sent) while the connection is down."""
        details = self.contract_cache.peek(order.symbol)
        if details is None or details.contract is None:
            raise BrokerError(f"{order.symbol}: no qualified contract; cannot send {order.ref}")
        if not self._can_send():
            raise NotConnected(f"the connection to IB is down; {order.ref} was not sent")
        contract = details.contract
        ib_order = self._ib_order(order)
        try:
            trade = place_new(self.ib, contract, ib_order)  # IB.placeOrder without its per-order repr
        except OSError as exc:  # ib_async's ConnectionError("Not connected"), raised before anything is sent
            raise NotConnected(f"the connection to IB is down; {order.ref} was not sent ({exc})") from exc
        order_id = trade.order.orderId
        self._orders[order_id] = Placed(order.ref, order.symbol, order.qty, ib_order, contract)
        return order_id

    def _ib_order(self, order: BrokerOrder) -> Order:
        """``order`` as ib_async's ``Order`` (no order id yet: ``place_new`` takes one when it sends it)."""
        if order.order_type is OrderType.LIMIT:
            assert order.limit_price is not None
            ib_order: Order = LimitOrder(order.action.value, order.qty, wire_price(order.limit_price))
        else:
            ib_order = MarketOrder(order.action.value, order.qty)
        ib_order.orderRef = order.ref
        ib_order.account = order.account or self.default_account
        ib_order.tif = "DAY"
        return ib_order

    def rehearse_order(self, order: BrokerOrder) -> None:
        """Build ``order`` as ``place_order`` would - its contract looked up, its ``Order`` made and encoded as the
        connected client encodes it (``placing.SilentClient``) - and send nothing, take no order id: the engine's
        exit rehearsal (runtime/exit_rehearsal.py) keeps that code warm.  Not while the connection is down."""
        details = self.contract_cache.peek(order.symbol)
        if details is not None and details.contract is not None and self._can_send():
            if self._silent is None or not self._silent.encodes_for(self.ib.client):
                self._silent = SilentClient(self.ib.client)
            self._silent.encode_order(details.contract, self._ib_order(order))

    def cancel_order(self, order_id: int) -> None:
        """Cancel an order; never raises.  While the connection is down the cancel is held, and sent once after
        the reconnection's reconciliation if the order is still working then (nothing is sent if it ended)."""
        placed = self._orders.get(order_id)
        if placed is None or placed.final:
            return
        if self._can_send():
            try:
                self.ib.cancelOrder(placed.order)
                self._cancels_sent.add(order_id)
                return
            except OSError as exc:  # ib_async's ConnectionError("Not connected"): nothing was sent
                log.warning("cancel of %s not sent: %r", placed.ref, exc)
            except Exception:
                log.exception("cancel of %s (order id %s) failed in ib_async; the order may still be working",
                              placed.ref, order_id)
                return
        self._held_cancels[order_id] = placed.ref
        log.warning("connection to IB down: the cancel of %s is held until the connection is back", placed.ref)

    def _send_held_cancels(self, working: dict[int, str]) -> None:
        """After (re)connecting, cancel once the orders still working whose cancel was held while down, or was
        sent but lost with the socket (ib_async's queue dies with it: IB shows the order without PendingCancel)."""
        lost = {oid: self._orders[oid].ref for oid in self._cancels_sent
                if working.get(oid, "PendingCancel") != "PendingCancel"}
        held, self._held_cancels = {**self._held_cancels, **lost}, {}
        self._cancels_sent &= set(working)
        for order_id, ref in held.items():
            placed = self._orders.get(order_id)
            if placed is None or placed.final or order_id not in working:
                log.info("held cancel of %s dropped: the order ended while the connection was down", ref)
            else:
                log.info("sending the cancel of %s held while the connection was down", ref)
                self._send_paced(Lane.CANCEL_MODIFY, f"held cancel {ref}", functools.partial(self.cancel_order,
                                                                                            order_id))

    async def what_if(self, order: BrokerOrder) -> WhatIf:
        contract = await self._contract(order.symbol)
        ib_order: Order = (LimitOrder(order.action.value, order.qty, wire_price(order.limit_price))
                           if order.order_type is OrderType.LIMIT else MarketOrder(order.action.value, order.qty))
        ib_order.account = order.account or self.default_account
        await self._paced(Lane.WHAT_IF, f"what-if {order.ref}")
        state = await asyncio.wait_for(self.ib.whatIfOrderAsync(contract, ib_order), self.cfg.request_timeout_s)
        init = ib_number(state.initMarginChange)
        warning = state.warningText or ""
        accepted = not math.isnan(init) and not (state.status or "").lower().startswith("reject")
        return WhatIf(accepted and not warning.lower().startswith("reject"), init, ib_number(state.maintMarginChange),
                      ib_number(state.commission), warning, self.now_ns())

    async def positions(self, account: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for pos in self.ib.positions(account or self.default_account):
            if pos.position:
                out[pos.contract.symbol] = out.get(pos.contract.symbol, ZERO) + exact(pos.position)
        return out

    async def account_values(self, account: str = "") -> dict[str, float]:
        """Net liquidation, buying power and margin of an account, from IB's account updates (the risk
        layer sizes and blocks entries with these)."""
        return account_numbers(self.ib.accountValues(account or self.default_account))

    @guarded("order status", log)
    def _on_status(self, trade: Trade) -> None:
        if trade.orderStatus.status in IBOrderStatus.DoneStates:
            self._book_reads.details(trade.order, trade.contract)  # converted now, not in a later pass's hold
        order_id = trade.order.orderId
        placed = self._orders.get(order_id)
        if placed is None or placed.final or not self._own_report(trade, placed):
            return
        ib_status = trade.orderStatus.status
        try:
            verdict = order_verdict(trade, placed.filled, placed.submitted)
        except KeyError:
            log.warning("order %s: IB status %r is not in the status table; ignored", placed.ref, ib_status)
            return
        if verdict.restore is not None:  # ib_async's "Cancelled" is undone, so IB's own later reports are seen
            trade.orderStatus.status = verdict.restore
        if verdict.note:
            log.warning("order %s (id %s): %s", placed.ref, order_id, verdict.note)
        status, now = verdict.status, self.now_ns()
        # Reported: the first acknowledgement, and the end of an order that did not fill, once.  Not reported:
        # submitting (not acknowledged yet), cancelling, filled (the executions close it), None (no news).
        if status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
            if not placed.submitted:
                placed.submitted = True
                self._emit(OrderStatusEvent(order_id, placed.ref, status, placed.filled, placed.qty - placed.filled,
                                            now))
        elif status is OrderStatus.CANCELLED or status is OrderStatus.REJECTED:
            placed.final = True
            self._emit(OrderStatusEvent(order_id, placed.ref, status, placed.filled, placed.qty - placed.filled, now,
                                        verdict.reason or ib_status, verdict.code))

    @guarded("execution", log)
    def _on_exec(self, trade: Trade, fill: Fill) -> None:
        self._apply_fill(fill)

    def _apply_fill(self, fill: Fill) -> None:
        ex = fill.execution
        if ex.execId in self._seen_execs:
            return
        found = self._owner_of(fill)  # orderRef, clientId, account, conId, side (permId) must all match
        if found is None:
            return
        order_id, placed = found
        self._seen_execs.add(ex.execId)
        placed.filled += exact(ex.shares)
        self._emit(fill_event(order_id, placed.ref, fill, self.now_ns()))
        if placed.filled >= placed.qty:
            placed.final = True

    @guarded("commission", log)
    def _on_commission(self, trade: Trade, fill: Fill, report: CommissionReport) -> None:
        order_id = fill.execution.orderId
        if report.execId not in self._seen_execs:
            return
        if order_id in self._orders and not math.isnan(ib_number(report.commission)):
            self._emit(CommissionEvent(order_id, report.execId, exact(report.commission), self.now_ns()))
        self._book_reads.execution(fill, self._candidate, self._book_execution)  # converted now, not in a pass

    # ------------------------------------------------------------------------------- reconciliation

    def _reconcile(self, working: set[int]) -> None:
        """After (re)connecting: apply fills that happened while away, close orders that ended while away."""
        for fill in self.ib.fills():
            self._apply_fill(fill)
        now = self.now_ns()
        for order_id, placed in self._orders.items():
            if placed.final or order_id in working:
                continue
            if placed.filled >= placed.qty:
                placed.final = True
                continue
            placed.final = True
            self._emit(OrderStatusEvent(order_id, placed.ref, OrderStatus.CANCELLED, placed.filled,
                                        placed.qty - placed.filled, now,
                                        "not working at IB after reconnect (cancelled or expired while away)"))

    # ---------------------------------------------------------------------------------------- errors

    # ---------------------------------------------------------------------------------------- events

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, event: BrokerEvent) -> None:
        self._events.append(event)
        self._wake()

    def _wake(self) -> None:
        """Wake ``next_events`` - its own future, resolved here: the engine's task runs on the next turn of the
        loop (``asyncio.wait_for`` over an ``Event`` took two, and a task and a timer per wait: per socket read)."""
        if self._waiter is not None:
            _resolve(self._waiter)

    def quote_age_s(self) -> float:
        """Seconds since the last quote handed to the engine (infinite before the first): the exit rehearsal rests
        while none come."""
        return time.monotonic() - self._last_quote_wall

    def has_events(self) -> bool:
        """Events read from the socket and not handed to the engine yet (the exit rehearsal lets them go first)."""
        return bool(self._events)

    async def next_events(self, wake_at_ns: int | None) -> list[BrokerEvent]:
        """What has arrived since the last call; waits for it until ``wake_at_ns`` (then [] if nothing came).

        A deadline already due still yields to the event loop once: the sockets are read only there, and a deadline
        that stays due for many steps (the shadow checker's look, sliced over steps) would otherwise run those steps
        back to back with the quotes unread - measured as a 20 ms hold of every quote (bench/wire_to_wire.py)."""
        loop = asyncio.get_running_loop()
        while not self._events:
            left = None if wake_at_ns is None else (wake_at_ns - self.now_ns()) / 1e9
            if left is not None and left <= 0:
                await asyncio.sleep(0)  # what the loop read meanwhile is handed over now, not after the due step
                break
            if wake_at_ns != self._timer_at or self._timer_loop is not loop:  # most waits share the next deadline
                self._arm(loop, wake_at_ns, left)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        events, self._events = self._events, []
        return events

    def _arm(self, loop: asyncio.AbstractEventLoop, wake_at_ns: int | None, left: float | None) -> None:
        """The one deadline timer, re-armed only when the deadline changes: a timer made and cancelled per wait
        (per socket read, ~800 a second under a quote stream) was a tenth of the engine's loop overhead."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at, self._timer_loop = wake_at_ns, loop
        self._timer = None if left is None else loop.call_later(left, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer, self._timer_at = None, None  # (a wait for the same deadline, woken early, arms it again)
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _connect_hint(exc: BaseException, cfg: IBConfig) -> str:
    """What a failed connection most likely means, in words a user can act on (``tickguard doctor`` checks more)."""
    if isinstance(exc, ConnectionRefusedError):
        return (f"nothing accepts connections on port {cfg.port} - is TWS / IB Gateway running, logged in, with the "
                "API enabled (Configure > API > Settings) on this port? Check [ib] host and port")
    if isinstance(exc, TimeoutError):
        return (f"no API answer within {cfg.connect_timeout_s:g}s - is the API enabled, 127.0.0.1 a trusted IP, "
                "and no dialog waiting in TWS? (tickguard doctor --config ... checks each step)")
    return f"{type(exc).__name__}: {exc}"
