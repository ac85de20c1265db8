"""Fault injection for the fake gateway: the failures an IB engine must survive, on demand.

Why these faults: each is something a real TWS/Gateway does to a live engine — sockets dropped at
the nightly restart, a frozen gateway that still accepts bytes, connectivity and farm messages
(with reqId -1, as IB sends them), a market-data farm that goes silent without further notice,
orders rejected or filled in pieces, fills that arrive late. Tests call these on the gateway object.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tickguard.adapters.sim.venue import Quote

from . import outgoing as out

if TYPE_CHECKING:
    from .orders import OrderBook
    from .session import ClientSession

log = logging.getLogger(__name__)

SYSTEM_MESSAGES: dict[int, str] = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2107: "HMDS data farm connection is inactive but should be available upon demand.ushmds",
    2108: "Market data farm connection is inactive but should be available upon demand.usfarm",
    2158: "Sec-def data farm connection is OK:secdefnj",
}
ALL = None


class FaultsMixin:
    """Fault-injection methods of :class:`~.server.FakeGateway` (state lives on the gateway)."""

    sessions: list[ClientSession]
    book: OrderBook
    stalled: bool
    hmds_down: bool
    _muted: set[str] | None
    _stall_handle: asyncio.TimerHandle | None

    def all_symbols(self) -> list[str]:
        raise NotImplementedError

    def notify(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------- connections

    async def drop_connections(self, timeout: float = 5.0) -> int:
        """Close every client socket (as a gateway restart does); returns how many were open.

        Orders keep working and filling at the venue while the clients are away.
        """
        victims = [s for s in self.sessions if not s.closed]
        for session in victims:
            session.close()

        async def gone() -> None:
            while any(s in self.sessions for s in victims):
                await asyncio.sleep(0.005)

        await asyncio.wait_for(gone(), timeout)
        return len(victims)

    def stall(self, seconds: float | None = None) -> None:
        """Stop sending anything to any client (requests are still read and processed).

        Everything produced meanwhile is held and delivered, in order, by :meth:`resume` — which
        happens by itself after ``seconds`` of wall time when given.
        """
        self.stalled = True
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if seconds is not None:
            self._stall_handle = asyncio.get_running_loop().call_later(seconds, self.resume)

    def resume(self) -> None:
        """End a stall and deliver what was held."""
        self.stalled = False
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        for session in self.sessions:
            session.flush_backlog()

    # ---------------------------------------------------------------------------- system messages

    def send_system_message(self, code: int, message: str | None = None) -> None:
        """Send error ``code`` with reqId -1 to every connected client, as IB does for system events."""
        text = message if message is not None else SYSTEM_MESSAGES.get(code, f"system message {code}")
        for session in self.sessions:
            if session.client_id is not None:
                session.send(out.error(-1, code, text))

    def farm_status(self) -> list[tuple[int, str]]:
        """What IB tells a client right after it connects, one system message per farm, in IB's order: the
        market-data farm (2104 OK, or 2103 broken while every symbol's quotes are cut), the historical-data farm
        (2106 or 2105) and the security-definition farm (2158)."""
        market = 2103 if self._muted is None else 2104
        hmds = 2105 if self.hmds_down else 2106
        return [(code, SYSTEM_MESSAGES[code]) for code in (market, hmds, 2158)]

    def connectivity_lost(self) -> None:
        """Error 1100. Quotes keep flowing here; the point is how the client reacts to the message."""
        self.send_system_message(1100)

    def connectivity_restored(self, data_lost: bool = False) -> None:
        """Error 1101 (subscriptions lost: the client must resubscribe) or 1102 (data maintained)."""
        if data_lost:
            for session in self.sessions:
                session.mkt_subs.clear()
        self.send_system_message(1101 if data_lost else 1102)

    # ------------------------------------------------------------------------------------- farms

    def farm_outage(self, symbols: Iterable[str] | None = ALL) -> None:
        """Error 2103, then no quotes for ``symbols`` (all when None) until :meth:`farm_restored`.

        The venue keeps trading and filling resting orders meanwhile: only the feed is dead, which
        is exactly the silent failure a stale-tick watchdog must catch.
        """
        if symbols is None:
            self._muted = None
        elif self._muted is not None:
            self._muted |= set(symbols)
        self.send_system_message(2103)
        self.notify()

    def farm_restored(self, symbols: Iterable[str] | None = ALL) -> None:
        """Error 2104; quotes resume, starting with the current quote of every subscription."""
        if symbols is None:
            self._muted = set()
        else:
            if self._muted is None:
                self._muted = set(self.all_symbols())
            self._muted -= set(symbols)
        self.send_system_message(2104)
        venue = self.book.venue
        for session in self.sessions:
            for symbol in {s for s in session.mkt_subs.values() if s not in self.muted_symbols()}:
                tick = venue.last_ticks.get(symbol)
                if tick is not None:
                    session.on_tick(tick)
        self.notify()

    # ------------------------------------------------------------------------------------ quotes

    def burst(self, symbol: str, quotes: Sequence[tuple[float, ...]], size: float = 100.0) -> int:
        """Send several quotes of ``symbol`` - ``(bid, ask)`` or ``(bid, ask, last)`` each - to every client
        subscribed to it, all in ONE socket write per connection, as TWS does under load: ib_async then
        decodes them in one read and raises one ``pendingTickersEvent``, whose ticker holds only the last
        quote (the earlier ones are in ``ticker.ticks``).  The wire messages are ordinary tickPrice messages
        (``1,6,reqId,tickType,price,size,attrMask``).  The venue's own market is not moved.  Returns how many
        connections were written to.
        """
        ticks = []
        for quote in quotes:
            if len(quote) not in (2, 3):
                raise ValueError(f"a burst quote is (bid, ask) or (bid, ask, last), got {quote!r}")
            bid, ask, last = (*quote, math.nan) if len(quote) == 2 else quote
            if not 0 < bid <= ask:
                raise ValueError(f"burst quote {quote!r}: bid must be positive and not above the ask")
            ticks.append(Quote(symbol, float(bid), float(ask), float(last), size, 0, 0))
        current = self.book.venue.last_ticks.get(symbol)
        prev_ask = current.ask if current is not None else math.inf
        written = 0
        for session in self.sessions:
            messages = session.burst_messages(symbol, ticks, prev_ask) if session.client_id is not None else []
            if messages:
                session.send_together(messages)
                written += 1
        self.notify()
        return written

    def muted_symbols(self) -> set[str]:
        return set(self.all_symbols()) if self._muted is None else self._muted

    def hmds_outage(self) -> None:
        """Error 2105; historical requests fail with error 162 until :meth:`hmds_restored`."""
        self.hmds_down = True
        self.send_system_message(2105)

    def hmds_restored(self) -> None:
        """Error 2106; historical requests are answered again."""
        self.hmds_down = False
        self.send_system_message(2106)

    # ------------------------------------------------------------------------------------ orders

    def reject_next(self, reason: str = "simulated rejection") -> None:
        """The next order reaching the exchange is rejected: error 201 "Order rejected - reason:…"."""
        self.book.venue.exchange.reject_next = reason

    def partial_next(self) -> None:
        """The next order reaching the exchange fills in two pieces (a partial fill, then the rest)."""
        self.book.venue.exchange.partial_next = True

    def delay_fills(self, seconds: float) -> None:
        """Orders placed from now on reach the exchange ``seconds`` of virtual time late (0 to stop).

        They are acknowledged at once (PreSubmitted) and can be modified or cancelled meanwhile.
        """
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self.book.fill_delay_s = seconds
