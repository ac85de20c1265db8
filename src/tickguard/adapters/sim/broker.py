"""``SimBroker``: the ``Broker`` protocol over an in-process ``SimVenue``.

Virtual time advances only when the engine asks for events, and every outcome is a function of the seed,
so a run is reproducible.  ``speed`` maps virtual to wall time for the live view (0 = as fast as possible).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from decimal import Decimal

from tickguard.adapters.broker import (
    BrokerError,
    BrokerEvent,
    BrokerOrder,
    ContractInfo,
    KnownToEngine,
    OrderBook,
    UnknownSymbol,
    WhatIf,
)
from tickguard.adapters.sim.market import NY, session_bounds
from tickguard.adapters.sim.venue import Quote, SimVenue
from tickguard.adapters.ttl_cache import TTLCache
from tickguard.core.message_budget import MessageBudget
from tickguard.core.model import Bar, Tick
from tickguard.core.money import exact
from tickguard.core.order_state import OrderStatus
from tickguard.core.price_grid import PriceGrid
from tickguard.core.throttle import Lane

_serial = itertools.count(1)

# The simulated exchange's own order statuses (its view, like IB's) onto the engine's order states.
_WORKING = frozenset({"pending", "working"})
_ENDED = {"filled": OrderStatus.FILLED, "cancelled": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED}


class SimBroker:
    name = "sim"

    def __init__(self, venue: SimVenue, speed: float = 0.0, yield_every: int = 2000) -> None:
        self.venue = venue
        self.speed = speed
        self._subscribed: set[str] = set()
        self.feed_muted: set[str] = set()  # a simulated farm outage: these symbols' quotes are not delivered
        self.resubscribed: list[tuple[int, str]] = []  # (virtual time, symbol) of every resubscription
        self._wall0 = 0.0
        self._virt0 = 0
        self._yield_every = yield_every
        self._since_yield = 0
        self.connected = False
        self._grids: dict[str, PriceGrid] = {}
        self._budget: MessageBudget | None = None
        # The same caches as the IB adapter's (contracts for a day, daily bars for an hour), on the venue's virtual
        # clock: the simulation looks things up the way a live run does, and its cache metrics mean the same.
        clock = lambda: self.venue.now_ns / 1e9  # noqa: E731 - the caches read virtual seconds
        self.contract_cache: TTLCache[str, ContractInfo] = TTLCache(self._load_contract, ttl=86_400.0, clock=clock)
        self.volatility_cache: TTLCache[tuple[str, int], list[Bar]] = TTLCache(self._load_bars, ttl=3_600.0,
                                                                                clock=clock)

    def now_ns(self) -> int:
        return self.venue.now_ns

    async def connect(self) -> None:
        self._wall0 = time.monotonic()
        self._virt0 = self.venue.now_ns
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        await self.contract_cache.aclose()
        await self.volatility_cache.aclose()

    async def qualify(self, symbol: str) -> ContractInfo:
        return await self.contract_cache.get(symbol)

    async def _load_contract(self, symbol: str) -> ContractInfo:
        spec = self.venue.specs.get(symbol)
        if spec is None:
            raise UnknownSymbol(f"no security definition for {symbol!r} (error 200)")
        return ContractInfo(spec.symbol, spec.con_id, spec.exchange, spec.currency, spec.min_tick, Decimal(1))

    async def daily_bars(self, symbol: str, days: int) -> list[Bar]:
        return await self.volatility_cache.get((symbol, days))

    async def _load_bars(self, key: tuple[str, int]) -> list[Bar]:
        symbol, days = key
        await self.qualify(symbol)
        return self.venue.daily_bars(symbol, days)

    async def subscribe(self, symbol: str) -> None:
        await self.qualify(symbol)
        self._subscribed.add(symbol)

    async def resubscribe(self, symbol: str) -> None:
        """Subscribe again (recorded); a muted feed stays muted, as a farm outage is not cured by asking again."""
        self.resubscribed.append((self.venue.now_ns, symbol))
        await self.subscribe(symbol)

    def regular_session(self, symbol: str, ts_ns: int) -> tuple[int, int] | None:
        """The simulated market's session: weekdays 09:30-16:00 New York (``market.session_bounds``)."""
        open_, close = session_bounds(ts_ns)
        weekday = dt.datetime.fromtimestamp(ts_ns / 1e9, tz=NY).weekday()
        return (open_, close) if weekday < 5 and open_ <= ts_ns < close else None

    def feed_state(self) -> str:
        muted = ", ".join(sorted(self.feed_muted))
        return f"simulated feed; muted: {muted}" if muted else "simulated feed ok"

    def mute_feed(self, symbols: set[str] | list[str]) -> None:
        """A farm outage for tests: the venue keeps trading, these symbols' quotes stop reaching the engine."""
        self.feed_muted |= set(symbols)

    def restore_feed(self, symbols: set[str] | list[str] | None = None) -> None:
        self.feed_muted = set() if symbols is None else self.feed_muted - set(symbols)

    def place_order(self, order: BrokerOrder) -> int:
        return self.venue.place(order)

    def cancel_order(self, order_id: int) -> None:
        self.venue.cancel(order_id)

    def use_budget(self, budget: MessageBudget) -> None:
        """The engine's message budget: what-ifs wait for it, as at IB (orders are queued there by the executor)."""
        self._budget = budget

    async def what_if(self, order: BrokerOrder) -> WhatIf:
        """The exchange's what-if, once the budget lets a WHAT_IF message go (the engine's loop drains it): the
        simulated exchange counts it against its pacing limit like IB does."""
        budget = self._budget
        if budget is not None:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def go() -> None:
                if not turn.done():
                    turn.set_result(None)

            def refused(why: str) -> None:
                if not turn.done():
                    turn.set_exception(BrokerError(why))

            key = f"what-if {order.ref} #{next(_serial)}"
            why = budget.send(key, Lane.WHAT_IF, go, refused=refused)
            if why is not None:
                raise BrokerError(why)
            try:
                await turn
            except asyncio.CancelledError:
                budget.withdraw(key)
                raise
        return self.venue.what_if(order)

    async def positions(self, account: str) -> dict[str, Decimal]:
        return _exact_positions(self.venue.positions(account))

    async def order_book(self, full: bool = True, known: KnownToEngine | None = None) -> OrderBook:
        ex = self.venue.exchange
        working = {o.order.ref: (o.order_id, exact(o.filled)) for o in ex.orders.values()
                   if o.status in _WORKING}
        ended = {o.order.ref: (o.order_id, _ENDED[o.status]) for o in ex.orders.values() if o.status in _ENDED
                 and (known is None or not known.ended(o.order.ref))}
        positions = {a: _exact_positions(self.venue.positions(a)) for a in ex.accounts}
        details = {o.order.ref: o.order for o in ex.orders.values()}
        executions = [e for e in ex.executions if known is None or e.exec_id not in known.executions]
        return OrderBook(working, ended, executions, positions, details=details)

    async def next_events(self, wake_at_ns: int | None) -> list[BrokerEvent]:
        venue = self.venue
        while True:
            ts = venue.next_time()
            if wake_at_ns is not None and wake_at_ns < ts:
                await self._pace(wake_at_ns)
                venue.now_ns = max(venue.now_ns, wake_at_ns)
                return []
            await self._pace(ts)
            subscribed, muted = self._subscribed, self.feed_muted
            events: list[BrokerEvent] = []
            for e in venue.step():
                if not isinstance(e, Quote):
                    events.append(e)  # type: ignore[arg-type]
                elif e.symbol in subscribed and e.symbol not in muted:
                    events.append(self._tick(e))
            if events:
                return events

    async def _pace(self, ts_ns: int) -> None:
        """Hold virtual time to ``speed`` x wall time; at full speed, still let other tasks run."""
        if self.speed > 0:
            due = self._wall0 + (ts_ns - self._virt0) / 1e9 / self.speed
            delay = due - time.monotonic()
            if delay > 0.001:
                await asyncio.sleep(delay)
                return
        self._since_yield += 1
        if self._since_yield >= self._yield_every:
            self._since_yield = 0
            await asyncio.sleep(0)


    def _tick(self, quote: Quote) -> Tick:
        """The venue's quote on the symbol's grid: the one place simulated prices enter the core."""
        grid = self._grids.get(quote.symbol)
        if grid is None:
            grid = self._grids[quote.symbol] = PriceGrid(self.venue.specs[quote.symbol].min_tick)
        return Tick(quote.symbol, grid.units(quote.bid), grid.units(quote.ask), grid.units(quote.last), quote.size,
                    quote.ts_ns, quote.recv_ns, quote.seq)


def _exact_positions(positions: dict[str, float]) -> dict[str, Decimal]:
    """The venue counts shares in doubles; the engine compares positions exactly."""
    return {symbol: exact(qty) for symbol, qty in positions.items()}
