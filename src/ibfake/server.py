"""The fake IB Gateway: a TCP server speaking TWS protocol 178, backed by a simulated venue.

Why: the engine's ib_async adapter must be tested against the real, unmodified ib_async client over a
real socket — connection sync, pacing, reconnects and IB's message quirks included — without an IB
account. The gateway owns one :class:`~tickguard.adapters.sim.venue.SimVenue` (market + exchange +
virtual clock); client connections come and go, the venue keeps trading.

Time: with ``speed > 0`` a background task keeps the venue at ``speed`` x wall time. Tests use
``speed=0`` and move time with :meth:`FakeGateway.advance`, which also flushes every event to the
sockets, so a test is deterministic for its seed.

Usage::

    async with FakeGateway(seed=1, symbols=3, speed=0) as gw:   # listens on 127.0.0.1:<gw.port>
        await ib.connectAsync("127.0.0.1", gw.port, clientId=1)
        await gw.advance(2.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from tickguard.adapters.sim.exchange import ExchangeParams
from tickguard.adapters.sim.market import NY, MarketParams, SymbolSpec
from tickguard.adapters.sim.venue import Quote, SimVenue

from .clock import (
    NS,
    HistoryPacer,
    HistoryPacingLimits,
    MessagePacer,
    PacingLimits,
    PacingReport,
    VirtualClock,
    WallClock,
)
from .faults import FaultsMixin
from .history import HistoryBook
from .orders import OrderBook
from .outgoing import OutMsg
from .session import ClientSession
from .wire import Field

log = logging.getLogger(__name__)

DEFAULT_START = dt.datetime(2025, 1, 6, 9, 30, tzinfo=NY)
"""A Monday session open: the venue starts trading at once, and runs are reproducible."""
DEFAULT_ACCOUNT = "DU0000001"
CLOCK_INTERVAL_S = 0.02
# What a master API client receives of other clients' orders: their reports and executions (not their errors).
MASTER_SEES = frozenset({OutMsg.OPEN_ORDER, OutMsg.ORDER_STATUS, OutMsg.EXECUTION_DATA, OutMsg.COMMISSION_REPORT})

__all__ = ["DEFAULT_ACCOUNT", "FakeGateway", "HistoryPacingLimits", "MessagePacer", "PacingLimits", "PacingReport"]


class FakeGateway(FaultsMixin):
    """See the module docstring. Construct, then ``await start()`` (or use ``async with``)."""

    def __init__(
        self,
        seed: int = 0,
        symbols: int | list[str] | list[SymbolSpec] = 5,
        *,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: list[str] | None = None,
        start: dt.datetime = DEFAULT_START,
        venue: SimVenue | None = None,
        market: MarketParams | None = None,
        exchange: ExchangeParams | None = None,
        pacing: PacingLimits | None = None,
        history_pacing: HistoryPacingLimits | None = None,
        wall: WallClock = time.monotonic,
        master_client_id: int | None = None,
    ) -> None:
        """``master_client_id``: TWS's "Master API client ID" setting - that client sees every client's orders and
        executions (live, and in reqExecutions); every other client only its own.  None: no master client."""
        if venue is None:
            # the gateway enforces IB's pacing per connection in wall time; the exchange's own
            # virtual-time pacing would refuse bursts that are fine at IB
            params = exchange or ExchangeParams(max_msgs_per_s=1_000_000_000)
            venue = SimVenue(seed, int(start.timestamp()) * NS, _symbol_specs(symbols, seed), market, params)
        self.venue = venue
        self.seed = seed
        self.host = host
        self.port = port
        self.accounts = accounts or [DEFAULT_ACCOUNT]
        self.master_client_id = master_client_id
        self.wall = wall
        self.pacing = pacing or PacingLimits()
        self.history_pacer = HistoryPacer(history_pacing or HistoryPacingLimits(), wall)
        self.clock = VirtualClock(venue.now_ns, speed, wall)
        self.history = HistoryBook(seed, venue.specs, venue.now_ns)
        self.book = OrderBook(venue, self.accounts, self._send_to_client, self._on_fill)
        self.sessions: list[ClientSession] = []
        self._by_client: dict[int, ClientSession] = {}
        # every pacer that ever served a client id, closed sessions' too: the pacing report outlives the sockets
        self._pacers: dict[int, list[MessagePacer]] = {}
        self.errors: list[BaseException] = []  # protocol errors: a test should assert this stays empty
        self.unsupported: list[str] = []  # requests the gateway answered with "not supported"
        self.pacing_drops = 0
        self.connections = 0  # sockets accepted so far
        self.stalled = False
        self.hmds_down = False
        self.completed_orders_silent = False  # fault: reqCompletedOrders is never answered
        self._muted: set[str] | None = set()
        self._stall_handle: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_ids = itertools.count(1)
        self._changed: asyncio.Event | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    async def start(self) -> FakeGateway:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.clock.rebase(self.venue.now_ns)
        if self.clock.speed > 0:
            self._start_clock()
        log.info("fake IB gateway listening on %s:%s", self.host, self.port)
        return self

    async def close(self, timeout: float = 5.0) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._clock_task, timeout)
            self._clock_task = None
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close()
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), timeout)
            self._server = None
        if self._stall_handle is not None:
            self._stall_handle.cancel()

    async def __aenter__(self) -> FakeGateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    # --------------------------------------------------------------------------------------- time

    @property
    def now_ns(self) -> int:
        return self.venue.now_ns

    @property
    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.venue.now_ns / NS, tz=NY)

    async def advance(self, seconds: float) -> int:
        """Move virtual time forward, deliver every resulting message, return how many events ran."""
        return await self.advance_to(self.venue.now_ns + int(seconds * NS))

    async def advance_to(self, ts_ns: int) -> int:
        count = self._run_venue(ts_ns)
        self.clock.rebase(self.venue.now_ns)
        await self.flush()
        return count

    def set_speed(self, speed: float) -> None:
        """Change virtual seconds per wall second (0 stops the background clock)."""
        self.clock.set_speed(speed, self.venue.now_ns)
        if speed > 0 and self._server is not None:
            self._start_clock()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything written so far has been handed to the sockets."""
        await asyncio.wait_for(asyncio.gather(*(s.drain() for s in self.sessions)), timeout)

    def _start_clock(self) -> None:
        if self._clock_task is None or self._clock_task.done():
            self._clock_task = asyncio.create_task(self._run_clock(), name="fake-gateway-clock")

    async def _run_clock(self) -> None:
        """Keep the venue at wall time x speed; a slow step only delays, never skips, events."""
        while self.clock.speed > 0:
            try:
                self._run_venue(self.clock.target_ns())
            except Exception as exc:  # keep the market running; the error is recorded for tests
                log.exception("fake gateway clock step failed")
                self.errors.append(exc)
            await asyncio.sleep(CLOCK_INTERVAL_S)

    def _run_venue(self, ts_ns: int) -> int:
        events = self.venue.advance_to(ts_ns)
        for event in events:
            self._dispatch(event)
        if events:
            self.notify()
        return len(events)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, Quote):
            self.history.on_tick(event)
            if event.symbol in self.muted_symbols():
                return
            for session in self.sessions:
                if session.mkt_subs:
                    session.on_tick(event)
        else:
            self.book.on_event(event)

    # -------------------------------------------------------------------------------- connections

    def new_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int) -> ClientSession:
        """The session serving one connection (a subclass may serve it with its own, e.g. bench/wire_gateway.py)."""
        return ClientSession(self, reader, writer, conn_id)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = self.new_session(reader, writer, next(self._conn_ids))
        self.connections += 1
        self.sessions.append(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._tasks.discard(task)

    def register_client(self, session: ClientSession, client_id: int) -> bool:
        """Claim ``client_id`` for ``session``; False if another live connection holds it (error 326)."""
        holder = self._by_client.get(client_id)
        if holder is not None and not holder.closed:
            return False
        self._by_client[client_id] = session
        # the session's pacer has counted since the socket opened (startApi included); from here on it is this
        # client id's. A connection refused here (duplicate id) never belonged to the client id: not reported.
        self._pacers.setdefault(client_id, []).append(session.pacer)
        return True

    def unregister(self, session: ClientSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        if session.client_id is not None and self._by_client.get(session.client_id) is session:
            del self._by_client[session.client_id]
        self.notify()

    def client_ids(self) -> list[int]:
        return sorted(self._by_client)

    def pacing_report(self) -> dict[int, PacingReport]:
        """How fast each API client id talked, over all its connections so far, closed ones included.

        Why per client id and not per connection: a test's client reconnects (or is dropped for pacing and
        comes back), and what the test asserts is that *its* engine never outran IB's limit.
        ``max_in_window`` uses the pacing limit's window."""
        window = self.pacing.window_s
        return {cid: PacingReport.of(cid, pacers, window) for cid, pacers in sorted(self._pacers.items())}

    def _send_to_client(self, client_id: int, fields: list[Field]) -> None:
        session = self._by_client.get(client_id)
        if session is not None:
            session.send(fields)
        master = self.master_client_id
        if master is not None and master != client_id and fields and fields[0] in MASTER_SEES:
            session = self._by_client.get(master)  # the master client also gets other clients' order news
            if session is not None:
                session.send(fields)

    def _on_fill(self, account: str, symbol: str) -> None:
        for session in self.sessions:
            if session.client_id is not None:
                session.on_fill(account, symbol)

    def all_symbols(self) -> list[str]:
        return list(self.venue.specs)

    # ---------------------------------------------------------------------------------- observing

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true, re-checking after every client message or venue event."""

        async def loop() -> None:
            assert self._changed is not None, "start() first"
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)


def _symbol_specs(symbols: int | list[str] | list[SymbolSpec], seed: int) -> int | list[SymbolSpec]:
    """Accept a count, names (prices/volatilities drawn from the seed) or ready specs."""
    if isinstance(symbols, int) or not symbols or isinstance(symbols[0], SymbolSpec):
        return symbols  # type: ignore[return-value]
    import numpy as np

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x73796D]))
    specs = []
    for i, name in enumerate(symbols):
        assert isinstance(name, str)
        price = float(np.round(rng.uniform(15, 400), 2))
        specs.append(SymbolSpec(name, 100_000 + i, price, float(rng.uniform(0.012, 0.035))))
    return specs
