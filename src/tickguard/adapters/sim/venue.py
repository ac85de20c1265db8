"""The simulated venue: market paths + exchange + one virtual clock, advanced event by event.

Everything happens at a virtual timestamp taken from one heap, so a run is a pure function of its seed.
Callers (the in-process ``SimBroker``, later the fake IB Gateway) decide how virtual time maps to wall time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tickguard.adapters.broker import BrokerOrder, WhatIf
from tickguard.adapters.sim.exchange import ExchangeParams, SimExchange
from tickguard.adapters.sim.market import (
    MarketParams,
    PricePath,
    SymbolSpec,
    daily_history,
    make_symbols,
    quote,
)
from tickguard.core.model import Bar


@dataclass(slots=True, frozen=True)
class Quote:
    """A quote of the simulated market, in the doubles a real feed sends (IB's wire, the fake gateway reads
    these).  The engine never sees one: ``SimBroker`` turns each into a core ``Tick`` on the symbol's grid,
    the way the IB adapter does with ib_async's floats."""

    symbol: str
    bid: float
    ask: float
    last: float
    size: float
    ts_ns: int
    recv_ns: int
    seq: int = 0


class SimVenue:
    def __init__(
        self,
        seed: int,
        start_ns: int,
        symbols: list[SymbolSpec] | int = 5,
        market: MarketParams | None = None,
        exchange: ExchangeParams | None = None,
        history_days: int = 60,
    ) -> None:
        root = np.random.SeedSequence(seed)
        sym_seed, ex_seed, hist_seed, quote_seed = root.spawn(4)
        self.market = market or MarketParams()
        specs = make_symbols(symbols, np.random.default_rng(sym_seed)) if isinstance(symbols, int) else symbols
        self.specs = {s.symbol: s for s in specs}
        self.now_ns = start_ns
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._out: list[object] = []
        path_seeds = np.random.SeedSequence(seed + 1).spawn(len(specs))
        self.paths = [PricePath(s, self.market, start_ns, np.random.default_rng(ps))
                      for s, ps in zip(specs, path_seeds, strict=True)]
        self._quote_rng = np.random.default_rng(quote_seed)
        self._path_heap = [(p.peek_ns(), i) for i, p in enumerate(self.paths)]
        heapq.heapify(self._path_heap)
        self.exchange = SimExchange(exchange or ExchangeParams(), self.specs, np.random.default_rng(ex_seed),
                                    self.schedule, self._out.append, lambda: self.now_ns)
        hist_rng = np.random.default_rng(hist_seed)
        self._history = {s.symbol: daily_history(s, history_days, start_ns, hist_rng) for s in specs}
        self._tick_seq = itertools.count(1)
        self.ticks_emitted = 0
        self.last_ticks: dict[str, Quote] = {}
        self.stalled: set[str] = set()  # fault injection: symbols whose quotes stop arriving

    def schedule(self, ts_ns: int, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(ts_ns, self.now_ns), next(self._seq), action))

    def next_time(self) -> int:
        tick_ts = self._path_heap[0][0]
        if self._heap and self._heap[0][0] <= tick_ts:
            return self._heap[0][0]
        return tick_ts

    def step(self) -> list[object]:
        """Advance to the next event time and return everything that happened at it, in order."""
        ts = self.next_time()
        self.now_ns = ts
        while True:
            if self._heap and self._heap[0][0] <= ts and self._heap[0][0] <= self._path_heap[0][0]:
                _, _, action = heapq.heappop(self._heap)
                action()
            elif self._path_heap[0][0] <= ts:
                self._emit_tick()
            else:
                break
        out = self._out[:]
        self._out.clear()
        return out

    def advance_to(self, ts_ns: int) -> list[object]:
        """Everything up to and including ``ts_ns``; the clock ends at ``ts_ns``."""
        out: list[object] = []
        while self.next_time() <= ts_ns:
            out.extend(self.step())
        self.now_ns = max(self.now_ns, ts_ns)
        return out

    def _emit_tick(self) -> None:
        _, idx = self._path_heap[0]
        path = self.paths[idx]
        ts, mid = path.pop()
        heapq.heapreplace(self._path_heap, (path.peek_ns(), idx))
        spec = path.spec
        if spec.symbol in self.stalled:
            return
        bid, ask = quote(mid, spec, self.market, self._quote_rng)
        last = bid if self._quote_rng.random() < 0.5 else ask
        tick = Quote(spec.symbol, bid, ask, last, float(self._quote_rng.integers(1, 20) * 100), ts, ts,
                    next(self._tick_seq))
        self.ticks_emitted += 1
        self._out.append(tick)  # the quote goes out before any fill it causes
        if bid <= ask and bid > 0:
            self.last_ticks[spec.symbol] = tick
            self.exchange.on_quote(spec.symbol, bid, ask, ts)

    # ------------------------------------------------------------------------------------- client API

    def daily_bars(self, symbol: str, days: int) -> list[Bar]:
        return self._history[symbol][-days:]

    def place(self, order: BrokerOrder) -> int:
        return self.exchange.submit(order, self.now_ns)

    def cancel(self, order_id: int) -> None:
        self.exchange.cancel(order_id, self.now_ns)

    def what_if(self, order: BrokerOrder) -> WhatIf:
        return self.exchange.what_if(order, self.now_ns)

    def positions(self, account: str) -> dict[str, float]:
        acct = self.exchange.accounts.get(account)
        if acct is None:
            return {}
        return {s: q for s, q in acct.positions.items() if not math.isclose(q, 0.0, abs_tol=1e-9)}
