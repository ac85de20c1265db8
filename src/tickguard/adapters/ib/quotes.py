"""Every quote of a socket read, in arrival order: ib_async's level-1 ticks turned into engine ``Tick`` values.

Why: ib_async raises ``pendingTickersEvent`` once per socket read, with a ``Ticker`` per symbol that carries
only the *latest* bid / ask / last.  When one read holds several quotes for a symbol (TWS batches them under
load) the earlier ones exist only in ``ticker.ticks`` - a list of ``TickData(time, tickType, price, size)`` that
ib_async appends to in arrival order while decoding the read (``Wrapper.priceSizeTick`` / ``tickSize``) and
empties at the start of the next read (``Wrapper.tcpDataArrived``, for the tickers that were pending).  A stop
touched by a dip that recovered within the same read is seen only by replaying that list, which this module
does: it keeps its own running bid / ask / last per symbol, applies each tick in order, and makes one engine
``Tick`` for each change of bid, ask or last.

IB's "no price" markers (-1, ib_async's default empty price; 0; NaN; the unset double) never become a price:
they make that side unknown, as does a bid or ask size of 0 (ib_async's own reading, ``Wrapper.tickSize``).
Nothing is emitted for a symbol until both its bid and ask are known.  The running quote is kept as IB sent it
(floats); each emitted ``Tick`` carries it in the symbol's grid units (``core.price_grid``: the nearest tick, so
``169.39000000000001`` and ``169.38999999999999`` are one price), converted here and only here.  Pure: no ib_async
import, so it is tested by feeding it ``TickData``-like tuples.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tickguard.core.model import Tick
from tickguard.core.price_grid import CENT, PriceGrid

NAN = math.nan
UNSET_DOUBLE = 1.7976931348623157e308
BID_PRICE, ASK_PRICE, LAST_PRICE = frozenset({1, 66}), frozenset({2, 67}), frozenset({4, 68})  # live, delayed
BID_SIZE, ASK_SIZE, LAST_SIZE = frozenset({0, 69}), frozenset({3, 70}), frozenset({5, 71})
QUOTE_TYPES = BID_PRICE | ASK_PRICE | BID_SIZE | ASK_SIZE
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)


class TickLike(Protocol):
    """What is read from an ib_async ``TickData``."""

    @property
    def time(self) -> dt.datetime | None: ...

    @property
    def tickType(self) -> int: ...  # ib_async's name

    @property
    def price(self) -> float: ...

    @property
    def size(self) -> float: ...


def ib_price(value: float | None) -> float:
    """A price from IB, or NaN for "no price" (-1 and any other value <= 0, NaN, the unset double, inf)."""
    if value is None:
        return NAN
    value = float(value)
    return value if 0.0 < value < UNSET_DOUBLE else NAN


def time_ns(when: dt.datetime | None, default: int) -> int:
    """Nanoseconds since the epoch of an aware datetime, exactly (no float rounding); ``default`` when unknown
    (None, or naive - ib_async's ``datetime.min`` before the first read)."""
    if when is None or when.tzinfo is None:
        return default
    return (when - _EPOCH) // _US * 1000


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


@dataclass(slots=True)
class QuoteState:
    """One symbol's running quote, and ib_async's ticker bid/ask as they stood after the previous read (as the
    ticker held them: converted with ``ib_price`` only on the rare path that reads them)."""

    bid: float = NAN
    ask: float = NAN
    last: float = NAN
    last_size: float = 0.0
    seen_bid: float | None = NAN
    seen_ask: float | None = NAN
    grid: PriceGrid = CENT
    # each side in grid units, for the float object it was converted from: a tick changes one side, and the other
    # two are not converted again (``QuoteAssembler._tick``; an identity test, so a side set anew is converted)
    bid_f: float | None = None
    bid_x: int = 0
    ask_f: float | None = None
    ask_x: int = 0
    last_f: float | None = None
    last_x: int = 0

    @property
    def known(self) -> bool:
        return self.bid == self.bid and self.ask == self.ask

    def apply(self, tick_type: int, price: float, size: float) -> bool:
        """Apply one tick; True when it changed bid, ask or last to a (new) price.  (A float in range is taken as
        is - ``ib_price``'s answer for it - without the call: this runs for every quote of the feed.)"""
        if tick_type in BID_PRICE:
            new = price if price.__class__ is float and 0.0 < price < UNSET_DOUBLE else ib_price(price)
            changed, self.bid = new == new and new != self.bid, new
            return changed
        if tick_type in ASK_PRICE:
            new = price if price.__class__ is float and 0.0 < price < UNSET_DOUBLE else ib_price(price)
            changed, self.ask = new == new and new != self.ask, new
            return changed
        if tick_type in LAST_PRICE:
            self._set_last_size(size)
            new = ib_price(price)
            changed, self.last = new == new and new != self.last, new
            return changed
        if tick_type in BID_SIZE and size == 0:
            self.bid = NAN  # no size on a side: no quote on it (ib_async clears ticker.bid the same way)
        elif tick_type in ASK_SIZE and size == 0:
            self.ask = NAN
        elif tick_type in LAST_SIZE:
            self._set_last_size(size)
        return False

    def _set_last_size(self, size: float) -> None:
        if size == size and 0 <= size < UNSET_DOUBLE:
            self.last_size = float(size)


class QuoteAssembler:
    """Per-symbol quote state and the feed's sequence numbers (one per emitted ``Tick``)."""

    def __init__(self) -> None:
        self._states: dict[str, QuoteState] = {}
        self.seq = 0
        # The last tick time converted, with the read's arrival time it defaulted to: ib_async stamps every tick of a
        # socket read with one datetime object (``Wrapper.lastTime``), so a read of a dozen symbols converts it once.
        # Held here, the object cannot be freed and its identity taken by another.
        self._when: object = None
        self._when_recv = -1
        self._when_ns = 0

    def reset(self, symbol: str, ticker_bid: float = NAN, ticker_ask: float = NAN, grid: PriceGrid = CENT) -> None:
        """Forget ``symbol``'s quote (a new subscription) and take its grid (the contract's minimum tick).
        ``ticker_bid`` / ``ticker_ask`` are what the ticker holds now (ib_async reuses a contract's ticker):
        they are old news, not a quote to emit."""
        self._states[symbol] = QuoteState(seen_bid=ticker_bid, seen_ask=ticker_ask, grid=grid)

    def known(self, symbol: str) -> bool:
        state = self._states.get(symbol)
        return state is not None and state.known

    def quote(self, symbol: str) -> tuple[float, float, float]:
        state = self._states.get(symbol) or QuoteState()
        return state.bid, state.ask, state.last

    def assemble(self, symbol: str, ticks: Iterable[TickLike], ticker_bid: float, ticker_ask: float,
                 ticker_time: dt.datetime | None, recv_ns: int, emit: bool = True) -> list[Tick]:
        """The ``Tick`` values of one read of ``symbol``, in arrival order (none when ``emit`` is False: the
        state is still brought up to date, so that a later quote is not mixed with a stale side).

        ``ticks`` is the ticker's ``ticks`` list; ``ticker_bid`` / ``ticker_ask`` / ``ticker_time`` are its
        current values, used only when the read carried no bid/ask tick although ib_async's bid or ask moved
        (e.g. a snapshot): then that quote is emitted once - unless it is the one already held."""
        state = self._states.get(symbol)
        if state is None:
            state = self._states[symbol] = QuoteState()
        out: list[Tick] = []
        quote_ticks = False
        for td in ticks:
            tick_type = td.tickType
            if tick_type in QUOTE_TYPES:
                quote_ticks = True
            if state.apply(tick_type, td.price, td.size) and emit and state.bid == state.bid and state.ask == state.ask:
                when = td.time
                if when is not self._when or recv_ns != self._when_recv:  # converted once a read (see __init__)
                    self._when, self._when_recv, self._when_ns = when, recv_ns, time_ns(when, recv_ns)
                out.append(self._tick(symbol, state, self._when_ns, recv_ns))
        if not quote_ticks:  # no bid/ask tick in the read: did ib_async's bid or ask move all the same?
            bid, ask = ib_price(ticker_bid), ib_price(ticker_ask)
            if (bid == bid and ask == ask
                    and not (_same(bid, ib_price(state.seen_bid)) and _same(ask, ib_price(state.seen_ask)))
                    and not (bid == state.bid and ask == state.ask)):
                state.bid, state.ask = bid, ask
                if emit:
                    out.append(self._tick(symbol, state, time_ns(ticker_time, recv_ns), recv_ns))
        state.seen_bid, state.seen_ask = ticker_bid, ticker_ask
        return out

    def _tick(self, symbol: str, state: QuoteState, ts_ns: int, recv_ns: int) -> Tick:
        self.seq += 1
        grid = state.grid
        if state.bid is not state.bid_f:
            state.bid_f, state.bid_x = state.bid, grid.units(state.bid)
        if state.ask is not state.ask_f:
            state.ask_f, state.ask_x = state.ask, grid.units(state.ask)
        if state.last is not state.last_f:
            state.last_f, state.last_x = state.last, grid.units(state.last)
        return Tick(symbol, state.bid_x, state.ask_x, state.last_x, state.last_size, ts_ns, recv_ns, self.seq)
