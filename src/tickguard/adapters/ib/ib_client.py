"""The ``Broker`` protocol on ``ib_async``: TWS / IB Gateway (paper or live), or tickguard's fake gateway.

ib_async calls back on its own schedule; this adapter turns every callback into an engine event on one
queue, which the engine drains.  It also owns what a broker connection must survive: reconnects with
backoff and jitter, the 1100/1101/1102 connectivity codes, data-farm outages, and reconciliation after a
reconnect (fills that happened while away are applied once, orders that ended while away are closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import Decimal

from ib_async import IB, Contract, ContractDetails, LimitOrder, MarketOrder, Order, Stock, Ticker, Trade
from ib_async.objects import CommissionReport, Fill

from tickguard.adapters.broker import (
    BrokerError,
    BrokerEvent,
    BrokerOrder,
    CommissionEvent,
    ContractInfo,
    NoticeEvent,
    OrderBook,
    OrderStatusEvent,
    UnknownSymbol,
    WhatIf,
)
from tickguard.adapters.ib.order_status import ib_closing_status, ib_ended_status, ib_order_status, last_error
from tickguard.adapters.ib.quotes import QuoteAssembler
from tickguard.adapters.ib.values import account_numbers, fill_event, ib_number
from tickguard.adapters.ttl_cache import TTLCache
from tickguard.config import IBConfig
from tickguard.core.model import Bar, OrderType
from tickguard.core.money import ZERO, exact
from tickguard.core.order_state import OrderStatus

log = logging.getLogger("tickguard.ib")

CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT = 1100, 1101, 1102
FARM_BROKEN, FARM_OK, HMDS_BROKEN, HMDS_OK = 2103, 2104, 2105, 2106
NO_SECURITY_DEFINITION = 200
PACING, HISTORICAL_PACING, DUPLICATE_CLIENT_ID = 100, 162, 326
# Codes reported to the engine as notices (not tied to one order).
SYSTEM_CODES = frozenset({CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT, FARM_BROKEN, FARM_OK,
                          HMDS_BROKEN, HMDS_OK, PACING, HISTORICAL_PACING, DUPLICATE_CLIENT_ID, 1300, 2110})


@dataclass(slots=True)
class _Placed:
    ref: str
    symbol: str
    qty: Decimal
    order: Order
    contract: Contract
    filled: Decimal = ZERO
    final: bool = False
    submitted: bool = False


@dataclass(slots=True)
class ConnectionState:
    connected: bool = False
    feed_trusted: bool = False
    farm_ok: bool = True
    reconnects: int = 0
    last_error: str = ""
    broken_farms: set[str] = field(default_factory=set)


class IBBroker:
    """One IB API connection."""

    name = "ib"

    def __init__(self, cfg: IBConfig, ib: IB | None = None, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.ib = ib or IB()
        self.ib.RequestTimeout = cfg.request_timeout_s
        self.state = ConnectionState()
        self._rng = rng or random.Random()
        self._events: list[BrokerEvent] = []
        self._wake = asyncio.Event()
        self._orders: dict[int, _Placed] = {}
        self._seen_execs: set[str] = set()
        self._tickers: dict[str, Ticker] = {}
        self._last_tick_wall: dict[str, float] = {}
        self._by_ticker: dict[int, str] = {}
        self._quotes = QuoteAssembler()
        self._closing = False
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
        return time.time_ns()

    async def connect(self) -> None:
        """Connect, trying ``connect_attempts`` times: a gateway restarting (or still holding a dead
        session of this client id) should not stop an engine that was started a second too early."""
        cfg = self.cfg
        for attempt in range(cfg.connect_attempts):
            self.state.last_error = ""
            try:
                await self.ib.connectAsync(cfg.host, cfg.port, cfg.client_id, timeout=cfg.connect_timeout_s,
                                           account=cfg.account, raiseSyncErrors=True)
                break
            except (TimeoutError, OSError, ConnectionError) as exc:
                if attempt + 1 >= cfg.connect_attempts:
                    why = self.state.last_error or repr(exc)
                    raise BrokerError(f"cannot connect to IB at {cfg.host}:{cfg.port} (client id "
                                      f"{cfg.client_id}) after {attempt + 1} attempt(s): {why}") from exc
                await asyncio.sleep(self.reconnect_delay(attempt))
        self.state.connected = True
        self.state.feed_trusted = True
        self._reconcile()

    async def close(self) -> None:
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        await self.contract_cache.aclose()
        await self.volatility_cache.aclose()
        self.ib.disconnect()
        self.state.connected = False

    def _on_disconnected(self) -> None:
        self.state.connected = False
        self.state.feed_trusted = False
        if self._closing:
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
            except BrokerError as exc:
                self.state.last_error = str(exc)
                log.warning("reconnect attempt %d failed: %s", attempt, exc)
                continue
            self.state.reconnects += 1
            await self._resubscribe_all(cancel_old=False)
            self._emit(NoticeEvent(0, f"reconnected after {attempt} attempt(s)", self.now_ns()))
            return

    # ------------------------------------------------------------------------------------- contracts

    async def _load_contract(self, symbol: str) -> ContractDetails:
        contract = Stock(symbol, self.cfg.exchange, self.cfg.currency)
        found = await asyncio.wait_for(self.ib.reqContractDetailsAsync(contract), self.cfg.request_timeout_s)
        if not found or found[0].contract is None or not found[0].contract.conId:
            raise UnknownSymbol(f"no security definition for {symbol!r} (IB error 200)")
        if len(found) > 1:
            raise BrokerError(f"{symbol!r} is ambiguous at IB ({len(found)} contracts); name the exchange")
        return found[0]

    def _contract_changed(self, symbol: str, old: ContractDetails, new: ContractDetails) -> None:
        if old.contract and new.contract and old.contract.conId != new.contract.conId:
            self._emit(NoticeEvent(NO_SECURITY_DEFINITION, f"{symbol}: conId changed {old.contract.conId} -> "
                                   f"{new.contract.conId} (symbol change or corporate action)", self.now_ns()))

    async def _contract(self, symbol: str) -> Contract:
        details = await self.contract_cache.get(symbol)
        assert details.contract is not None
        return details.contract

    async def qualify(self, symbol: str) -> ContractInfo:
        details = await self.contract_cache.get(symbol)
        c = details.contract
        assert c is not None
        return ContractInfo(symbol, c.conId, c.exchange, c.currency, float(details.minTick or 0.01),
                            exact(details.minSize) if details.minSize and details.minSize >= 1 else Decimal(1))

    async def _load_bars(self, key: tuple[str, int]) -> list[Bar]:
        symbol, days = key
        contract = await self._contract(symbol)
        duration = f"{days} D" if days <= 365 else f"{math.ceil(days / 365)} Y"
        bars = await asyncio.wait_for(
            self.ib.reqHistoricalDataAsync(contract, "", duration, "1 day", "TRADES", useRTH=True),
            self.cfg.request_timeout_s,
        )
        if not bars:
            raise BrokerError(f"{symbol}: IB returned no daily bars")
        out = []
        for b in bars:
            day = b.date if isinstance(b.date, dt.date) else dt.date.fromisoformat(str(b.date)[:10])
            ts = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()) * 1_000_000_000
            out.append(Bar(ts, float(b.open), float(b.high), float(b.low), float(b.close), float(b.volume)))
        return out

    async def daily_bars(self, symbol: str, days: int) -> list[Bar]:
        return await self.volatility_cache.get((symbol, days))

    # ----------------------------------------------------------------------------------- market data

    async def subscribe(self, symbol: str) -> None:
        contract = await self._contract(symbol)
        ticker = self.ib.reqMktData(contract, "", False, False)
        self._quotes.reset(symbol, ticker.bid, ticker.ask)
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
                with contextlib.suppress(Exception):
                    self.ib.cancelMktData(old.contract)
            await self.subscribe(symbol)

    async def _renew_silent(self) -> None:
        """After a recovery message, renew every subscription that has been silent too long."""
        now = time.monotonic()
        for symbol in list(self._tickers):
            if now - self._last_tick_wall.get(symbol, 0.0) >= self.cfg.stale_feed_s:
                old = self._tickers.pop(symbol)
                self._by_ticker.pop(id(old), None)
                with contextlib.suppress(Exception):
                    self.ib.cancelMktData(old.contract)
                await self.subscribe(symbol)

    def silent_symbols(self, older_than_s: float) -> list[str]:
        now = time.monotonic()
        return [s for s in self._tickers if now - self._last_tick_wall.get(s, 0.0) >= older_than_s]

    def _on_tickers(self, tickers: set[Ticker]) -> None:
        """One socket read: every bid / ask / last change in it becomes a Tick, in arrival order (see quotes.py).
        While the feed is not trusted the quotes are still followed, but not emitted."""
        trusted = self.state.feed_trusted
        now = time.time_ns()
        wall = time.monotonic()
        for ticker in tickers:
            symbol = self._by_ticker.get(id(ticker))
            if symbol is None:
                continue
            ticks = self._quotes.assemble(symbol, ticker.ticks, ticker.bid, ticker.ask, ticker.time, now, trusted)
            if trusted and (ticks or self._quotes.known(symbol)):
                self._last_tick_wall[symbol] = wall
                self._events.extend(ticks)
        if trusted:
            self._wake.set()

    # ---------------------------------------------------------------------------------------- orders

    def place_order(self, order: BrokerOrder) -> int:
        details = self.contract_cache.peek(order.symbol)
        if details is None or details.contract is None:
            raise BrokerError(f"{order.symbol}: no qualified contract; cannot send {order.ref}")
        contract = details.contract
        if order.order_type is OrderType.LIMIT:
            assert order.limit_price is not None
            ib_order: Order = LimitOrder(order.action.value, order.qty, order.limit_price)
        else:
            ib_order = MarketOrder(order.action.value, order.qty)
        ib_order.orderRef = order.ref
        ib_order.account = order.account if order.account else self.cfg.account
        ib_order.tif = "DAY"
        trade = self.ib.placeOrder(contract, ib_order)
        order_id = trade.order.orderId
        self._orders[order_id] = _Placed(order.ref, order.symbol, order.qty, ib_order, contract)
        return order_id

    def cancel_order(self, order_id: int) -> None:
        placed = self._orders.get(order_id)
        if placed is None or placed.final:
            return
        self.ib.cancelOrder(placed.order)

    async def what_if(self, order: BrokerOrder) -> WhatIf:
        contract = await self._contract(order.symbol)
        ib_order: Order = (LimitOrder(order.action.value, order.qty, order.limit_price)
                           if order.order_type is OrderType.LIMIT else MarketOrder(order.action.value, order.qty))
        ib_order.account = order.account or self.cfg.account
        state = await asyncio.wait_for(self.ib.whatIfOrderAsync(contract, ib_order), self.cfg.request_timeout_s)
        init = ib_number(state.initMarginChange)
        warning = state.warningText or ""
        accepted = not math.isnan(init) and not (state.status or "").lower().startswith("reject")
        return WhatIf(accepted and not warning.lower().startswith("reject"), init, ib_number(state.maintMarginChange),
                      ib_number(state.commission), warning, self.now_ns())

    async def positions(self, account: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for pos in self.ib.positions(account or self.cfg.account):
            if pos.position:
                out[pos.contract.symbol] = out.get(pos.contract.symbol, ZERO) + exact(pos.position)
        return out

    async def account_values(self, account: str = "") -> dict[str, float]:
        """Net liquidation, buying power and margin of an account, from IB's account updates (the risk
        layer sizes and blocks entries with these)."""
        return account_numbers(self.ib.accountValues(account or self.cfg.account))

    def _on_status(self, trade: Trade) -> None:
        placed = self._orders.get(trade.order.orderId)
        if placed is None or placed.final:
            return
        ib_status = trade.orderStatus.status
        try:
            status = ib_order_status(ib_status, placed.filled)
        except KeyError:
            log.warning("order %s: IB status %r is not in the status table; ignored", placed.ref, ib_status)
            return
        now = self.now_ns()
        # Reported: the first acknowledgement, and the end of an order that did not fill.  Not reported:
        # submitting (not acknowledged yet), cancelling, filled (the executions close it), None (a warning).
        if status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
            if not placed.submitted:
                placed.submitted = True
                self._emit(OrderStatusEvent(trade.order.orderId, placed.ref, status, placed.filled,
                                            placed.qty - placed.filled, now))
        elif status is OrderStatus.CANCELLED or status is OrderStatus.REJECTED:
            code, reason = last_error(trade)
            placed.final = True
            self._emit(OrderStatusEvent(trade.order.orderId, placed.ref, ib_closing_status(status, code),
                                        placed.filled, placed.qty - placed.filled, now, reason or ib_status, code))

    def _on_exec(self, trade: Trade, fill: Fill) -> None:
        self._apply_fill(fill)

    def _apply_fill(self, fill: Fill) -> None:
        ex = fill.execution
        if ex.execId in self._seen_execs:
            return
        placed = self._orders.get(ex.orderId)
        if placed is None:
            placed = next((p for p in self._orders.values() if p.ref and p.ref == ex.orderRef), None)
            if placed is None:
                return
        self._seen_execs.add(ex.execId)
        placed.filled += exact(ex.shares)
        order_id = next(oid for oid, p in self._orders.items() if p is placed)
        self._emit(fill_event(order_id, placed.ref, fill, self.now_ns()))
        if placed.filled >= placed.qty:
            placed.final = True

    def _on_commission(self, trade: Trade, fill: Fill, report: CommissionReport) -> None:
        order_id = fill.execution.orderId
        if order_id in self._orders and not math.isnan(ib_number(report.commission)):
            self._emit(CommissionEvent(order_id, report.execId, exact(report.commission), self.now_ns()))

    # ------------------------------------------------------------------------------- reconciliation

    async def order_book(self) -> OrderBook:
        """IB's view for journal recovery: this client's working orders, completed orders and the day's
        executions (by orderRef), and positions.  Orders found here are adopted so their events route."""
        working: dict[str, tuple[int, Decimal]] = {}
        for trade in self.ib.openTrades():
            ref = trade.order.orderRef
            if not ref:
                continue
            working[ref] = (trade.order.orderId, exact(trade.orderStatus.filled))
            self._adopt(trade.order, trade.contract, exact(trade.orderStatus.filled))
        ended: dict[str, tuple[int, OrderStatus]] = {}
        with contextlib.suppress(Exception):
            done = await asyncio.wait_for(self.ib.reqCompletedOrdersAsync(True), self.cfg.request_timeout_s)
            for trade in done:
                ref = trade.order.orderRef
                if ref and ref not in working:
                    ended[ref] = (trade.order.orderId, ib_ended_status(trade.orderStatus.status))
        executions = []
        for fill in self.ib.fills():
            ex = fill.execution
            if not ex.orderRef or not ex.orderRef.startswith("tg:"):
                continue
            self._adopt_exec(fill)
            executions.append(fill_event(ex.orderId, ex.orderRef, fill, self.now_ns()))
            self._seen_execs.add(ex.execId)
        positions: dict[str, dict[str, Decimal]] = {}
        for pos in self.ib.positions():
            if pos.position:
                acct = positions.setdefault(pos.account, {})
                acct[pos.contract.symbol] = acct.get(pos.contract.symbol, ZERO) + exact(pos.position)
        return OrderBook(working, ended, executions, positions)

    def _adopt(self, order: Order, contract: Contract, filled: Decimal) -> None:
        if order.orderId not in self._orders:
            self._orders[order.orderId] = _Placed(order.orderRef, contract.symbol, exact(order.totalQuantity),
                                                  order, contract, filled=filled, submitted=True)

    def _adopt_exec(self, fill: Fill) -> None:
        ex = fill.execution
        placed = self._orders.get(ex.orderId)
        if placed is None:
            qty = exact(ex.cumQty or ex.shares)
            order = Order(orderId=ex.orderId, orderRef=ex.orderRef, totalQuantity=qty)
            self._orders[ex.orderId] = placed = _Placed(ex.orderRef, fill.contract.symbol, qty, order, fill.contract)
        if ex.execId not in self._seen_execs:
            placed.filled += exact(ex.shares)

    def _reconcile(self) -> None:
        """After (re)connecting: apply fills that happened while away, close orders that ended while away."""
        for fill in self.ib.fills():
            self._apply_fill(fill)
        open_ids = {t.order.orderId for t in self.ib.openTrades()}
        now = self.now_ns()
        for order_id, placed in self._orders.items():
            if placed.final or order_id in open_ids:
                continue
            if placed.filled >= placed.qty:
                placed.final = True
                continue
            placed.final = True
            self._emit(OrderStatusEvent(order_id, placed.ref, OrderStatus.CANCELLED, placed.filled,
                                        placed.qty - placed.filled, now,
                                        "not working at IB after reconnect (cancelled or expired while away)"))

    # ---------------------------------------------------------------------------------------- errors

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None) -> None:
        now = self.now_ns()
        if code == CONNECTIVITY_LOST:
            self.state.feed_trusted = False
        elif code in (RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
            self.state.feed_trusted = True
            self._spawn(self._resubscribe_all() if code == RESTORED_DATA_LOST else self._renew_silent())
        elif code == FARM_BROKEN:
            self.state.farm_ok = False
            self.state.broken_farms.add(message.rsplit(":", 1)[-1].strip())
        elif code == FARM_OK:
            self.state.farm_ok = True
            self.state.broken_farms.discard(message.rsplit(":", 1)[-1].strip())
            self._spawn(self._renew_silent())
        elif code == DUPLICATE_CLIENT_ID:
            self.state.last_error = (f"IB error 326: client id {self.cfg.client_id} is already in use by another "
                                     "connection - choose another ib.client_id")
        elif code == NO_SECURITY_DEFINITION and contract is not None and contract.symbol:
            self.contract_cache.invalidate(contract.symbol)
        if code in SYSTEM_CODES or code == NO_SECURITY_DEFINITION:
            self._emit(NoticeEvent(code, message, now))

    # ---------------------------------------------------------------------------------------- events

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, event: BrokerEvent) -> None:
        self._events.append(event)
        self._wake.set()

    async def next_events(self, wake_at_ns: int | None) -> list[BrokerEvent]:
        while not self._events:
            self._wake.clear()
            timeout = None if wake_at_ns is None else max(0.0, (wake_at_ns - self.now_ns()) / 1e9)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return []
        events, self._events = self._events, []
        return events

