"""Tick intake: validation, per-symbol conflation into batch slots, and the order symbols are evaluated in.

A slot keeps, per price source, the last price and the high and low since the previous evaluation (plus
the largest pull-back from a running high and bounce from a running low, which is what a trailing stop
needs to see a touch *inside* the batch).  Memory is one slot per symbol, however many ticks arrive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tickguard.core.model import Tick, TriggerSource
from tickguard.core.trail_groups import Marks

_SOURCES = (TriggerSource.BID, TriggerSource.ASK, TriggerSource.LAST, TriggerSource.MID)


class _Track:
    """Running extremes of one price series within a batch."""

    __slots__ = (
        "dd",
        "dd_seq",
        "du",
        "du_seq",
        "high",
        "high_seq",
        "high_ts",
        "last",
        "last_seq",
        "last_ts",
        "low",
        "low_seq",
        "low_ts",
        "run_high",
        "run_low",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.last = math.nan
        self.high = -math.inf
        self.low = math.inf
        self.run_high = -math.inf
        self.run_low = math.inf
        self.dd = 0.0
        self.du = 0.0
        self.high_seq = self.low_seq = self.last_seq = self.dd_seq = self.du_seq = -1
        self.high_ts = self.low_ts = self.last_ts = 0

    def update(self, price: float, seq: int, ts: int) -> None:
        if price != price:  # NaN: this source is absent from the tick (e.g. no trade print)
            return
        self.last = price
        self.last_seq = seq
        self.last_ts = ts
        if price > self.high:
            self.high, self.high_seq, self.high_ts = price, seq, ts
        if price < self.low:
            self.low, self.low_seq, self.low_ts = price, seq, ts
        if price > self.run_high:
            self.run_high = price
        elif self.run_high - price > self.dd:
            self.dd, self.dd_seq = self.run_high - price, seq
        if price < self.run_low:
            self.run_low = price
        elif price - self.run_low > self.du:
            self.du, self.du_seq = price - self.run_low, seq


@dataclass(slots=True, frozen=True)
class SignedView:
    """A batch of one price source seen in signed space (x = sign * price; see exit_rules)."""

    low_x: float
    high_x: float
    last_x: float
    pullback_x: float  # largest fall from a running high within the batch
    low_seq: int
    low_ts: int
    high_seq: int
    high_ts: int
    pullback_seq: int
    last_seq: int
    last_ts: int


class SymbolBatch:
    """Everything that arrived for one symbol since its last evaluation, conflated."""

    __slots__ = ("count", "last_tick", "symbol", "tracks")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.tracks = {s: _Track() for s in _SOURCES}
        self.count = 0
        self.last_tick: Tick | None = None

    def add(self, tick: Tick) -> None:
        seq, ts = tick.seq, tick.ts_ns
        tracks = self.tracks
        tracks[TriggerSource.BID].update(tick.bid, seq, ts)
        tracks[TriggerSource.ASK].update(tick.ask, seq, ts)
        tracks[TriggerSource.LAST].update(tick.last, seq, ts)
        tracks[TriggerSource.MID].update((tick.bid + tick.ask) * 0.5, seq, ts)
        self.count += 1
        self.last_tick = tick

    def reset(self) -> None:
        for track in self.tracks.values():
            track.reset()
        self.count = 0

    def view(self, source: TriggerSource, sign: int) -> SignedView | None:
        t = self.tracks[source]
        if t.last_seq < 0:
            return None
        if sign > 0:
            return SignedView(
                t.low, t.high, t.last, t.dd, t.low_seq, t.low_ts, t.high_seq, t.high_ts, t.dd_seq,
                t.last_seq, t.last_ts,
            )
        return SignedView(
            -t.high, -t.low, -t.last, t.du, t.high_seq, t.high_ts, t.low_seq, t.low_ts, t.du_seq,
            t.last_seq, t.last_ts,
        )


@dataclass(slots=True)
class TickCounters:
    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def tick_problem(tick: Tick, last_ts: int | None) -> str | None:
    """Why a tick must not be acted on, or None.  Locked quotes (bid == ask) are valid; crossed are not."""
    bid, ask = tick.bid, tick.ask
    if not (math.isfinite(bid) and math.isfinite(ask)):
        return "non_finite_price"
    if bid <= 0 or ask <= 0:
        return "non_positive_price"
    if bid > ask:
        return "crossed_quote"
    last = tick.last
    if last == last and (not math.isfinite(last) or last <= 0):  # NaN last is allowed: quote-only feed
        return "bad_last_price"
    if tick.size < 0 or tick.size != tick.size:
        return "bad_size"
    if last_ts is not None and tick.ts_ns < last_ts:
        return "time_backwards"
    return None


class Evaluator(Protocol):
    """What the tick handler needs from the trade manager."""

    guards: dict[str, tuple[float, ...]]

    def guard(self, symbol: str) -> tuple[float, ...]: ...

    def evaluate(self, batch: SymbolBatch) -> None: ...

    def symbol_risk_at(self, symbol: str, tick: Tick) -> float: ...


@dataclass(slots=True)
class BatchStats:
    """Figures for the metrics layer: how many batches, how big, how long they took, what was waiting."""

    batches: int = 0
    ticks: int = 0
    evaluated: int = 0  # ticks that crossed a guard and were evaluated
    last_size: int = 0
    max_size: int = 0
    last_eval_ns: int = 0
    total_eval_ns: int = 0
    last_backlog: int = 0  # ticks of the chunk left for later windows when a batch started


class SymState:
    """Everything the handler keeps per symbol: the symbol's guards (copied from the trade manager and
    invalidated in place when its levels change), the last timestamp and quote, and the ticks of a window
    that still wait for evaluation.  One dict lookup per tick."""

    __slots__ = ("ah", "al", "bh", "bl", "fresh", "g", "last_tick", "last_ts", "m", "other", "pending", "symbol")

    def __init__(self, symbol: str, marks: Marks) -> None:
        self.symbol = symbol
        self.m = marks  # the trail-group marks, advanced here on every tick
        self.last_ts = 0
        self.last_tick: Tick | None = None
        self.pending: list[Tick] | None = None
        self.stale()

    def stale(self) -> None:
        """Make every tick cross until the guards are fetched again."""
        self.bl = self.al = math.inf
        self.bh = self.ah = -math.inf
        self.other = False
        self.fresh = False
        self.g: tuple[float, ...] = ()

    def load(self, g: tuple[float, ...]) -> None:
        self.bl, self.bh, self.al, self.ah = g[0], g[1], g[2], g[3]
        self.other = bool(g[8])
        self.g = g
        self.fresh = True


class TickHandler:
    """Validates ticks and decides which ones need evaluating, most at-risk symbol first.

    ``batch`` mode: a chunk of ticks (whatever arrived since the last call) is split into windows of at most
    ``window_ns`` of arrival time.  In a window, a tick whose prices stay strictly inside its symbol's guards
    (see ``TradeManager.guard``) cannot cross a level or set a new best, so it only becomes the symbol's
    last quote.  A tick that crosses a guard is evaluated exactly as in per-tick mode - before any later
    tick of its symbol - and symbols with such ticks are evaluated in order of their distance to stop, each
    symbol's exits handed on (``after_symbol``) before the next symbol is looked at.  Results are
    therefore identical to per-tick evaluation while most ticks of a storm cost a few comparisons.

    ``per_tick`` mode evaluates every tick through the trigger book: the classic engine, kept as baseline.
    """

    def __init__(
        self,
        evaluator: Evaluator | None = None,
        mode: str = "batch",
        window_ns: int = 100_000_000,
        after_symbol: Callable[[], None] | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if mode not in ("batch", "per_tick"):
            raise ValueError(f"tick mode must be 'batch' or 'per_tick', not {mode!r}")
        self.evaluator = evaluator
        self.mode = mode
        self.window_ns = window_ns
        self.after_symbol = after_symbol
        self.on_batch = on_batch
        self._states: dict[str, SymState] = {}
        self._one: dict[str, SymbolBatch] = {}
        self.counters = TickCounters()
        self.stats = BatchStats()
        if evaluator is not None and hasattr(evaluator, "guard_listener"):
            evaluator.guard_listener = self._invalidate

    def _invalidate(self, symbol: str) -> None:
        st = self._states.get(symbol)
        if st is not None and st.fresh:
            st.stale()

    def _state(self, symbol: str) -> SymState:
        st = self._states.get(symbol)
        if st is None:
            ev = self.evaluator
            marks = ev.marks_for(symbol) if ev is not None and hasattr(ev, "marks_for") else Marks()
            st = self._states[symbol] = SymState(symbol, marks)
        return st

    # ----------------------------------------------------------------------------------------- quotes

    def quote(self, symbol: str) -> Tick | None:
        st = self._states.get(symbol)
        return None if st is None else st.last_tick

    @property
    def last_quote(self) -> dict[str, Tick]:
        """Every symbol's last valid quote (a snapshot, for views and warm-up; not for the tick path)."""
        return {s: st.last_tick for s, st in self._states.items() if st.last_tick is not None}

    def seed_quotes(self, quotes: dict[str, Tick]) -> None:
        for symbol, tick in quotes.items():
            self._state(symbol).last_tick = tick

    # ---------------------------------------------------------------------------------------- intake

    def process(self, ticks: list[Tick]) -> None:
        """Handle a chunk of ticks in arrival order."""
        n = len(ticks)
        if n == 0:
            return
        start = 0
        window = self.window_ns
        while start < n:
            end = n
            if ticks[-1].recv_ns - ticks[start].recv_ns > window:
                limit = ticks[start].recv_ns + window
                end = start + 1
                while end < n and ticks[end].recv_ns <= limit:
                    end += 1
            self.stats.last_backlog = n - end
            self._window(ticks[start:end] if (start or end < n) else ticks)
            start = end

    def _window(self, ticks: list[Tick]) -> None:
        t0 = time.perf_counter_ns()
        ev = self.evaluator
        states = self._states
        inf = math.inf
        accepted = 0
        evaluated = 0
        per_tick = self.mode == "per_tick" or ev is None
        flagged: list[SymState] = []
        for tick in ticks:
            st = states.get(tick.symbol)
            if st is None:
                st = self._state(tick.symbol)
            b, a, ts, last = tick.bid, tick.ask, tick.ts_ns, tick.last
            if not (0.0 < b <= a < inf) or ts < st.last_ts or (last == last and not 0.0 < last < inf) \
                    or not tick.size >= 0:
                self.counters.drop(tick_problem(tick, st.last_ts) or "invalid")
                continue
            st.last_ts = ts
            accepted += 1
            if per_tick:
                st.last_tick = tick
                if ev is not None:
                    self._evaluate_one(ev, tick)
                    evaluated += 1
                    if self.after_symbol is not None:
                        self.after_symbol()
                continue
            if st.pending is not None:
                st.pending.append(tick)
                continue
            m = st.m
            if b > m.bmark:
                m.bmark = b
            if a < m.amark:
                m.amark = a
            if b <= st.bl or b >= st.bh or a <= st.al or a >= st.ah or b <= m.bmark - m.bd \
                    or a >= m.amark + m.ad or (st.other and _other_crosses(tick, st.g)):
                if not st.fresh:
                    st.load(ev.guard(st.symbol))  # type: ignore[union-attr]
                    if not _crosses(tick, st):
                        st.last_tick = tick
                        continue
                st.pending = [tick]
                flagged.append(st)
            else:
                st.last_tick = tick
        if flagged:
            assert ev is not None
            if len(flagged) > 1:
                flagged.sort(key=lambda x: ev.symbol_risk_at(x.symbol, x.pending[0]))  # type: ignore[index]
            for st in flagged:
                pending, st.pending = st.pending, None
                assert pending is not None
                check = False
                for tick in pending:
                    if check:
                        if not st.fresh:
                            st.load(ev.guard(st.symbol))
                        if not _crosses(tick, st):
                            st.last_tick = tick
                            continue
                    self._evaluate_one(ev, tick)
                    evaluated += 1
                    check = True
                    st.last_tick = tick
                if self.after_symbol is not None:
                    self.after_symbol()
        self.counters.accepted += accepted
        st_ = self.stats
        st_.batches += 1
        st_.ticks += accepted
        st_.evaluated += evaluated
        st_.last_size = accepted
        if accepted > st_.max_size:
            st_.max_size = accepted
        st_.last_eval_ns = time.perf_counter_ns() - t0
        st_.total_eval_ns += st_.last_eval_ns
        if self.on_batch is not None:
            self.on_batch(st_)

    def _evaluate_one(self, ev: Evaluator, tick: Tick) -> None:
        batch = self._one.get(tick.symbol)
        if batch is None:
            batch = self._one[tick.symbol] = SymbolBatch(tick.symbol)
        else:
            batch.reset()
        batch.add(tick)
        ev.evaluate(batch)


def _crosses(tick: Tick, st: SymState) -> bool:
    """Advance the trail marks with the tick, then: does it cross any guard of its symbol?"""
    b, a = tick.bid, tick.ask
    m = st.m
    if b > m.bmark:
        m.bmark = b
    if a < m.amark:
        m.amark = a
    return (b <= st.bl or b >= st.bh or a <= st.al or a >= st.ah or b <= m.bmark - m.bd or a >= m.amark + m.ad
            or bool(st.other and _other_crosses(tick, st.g)))


def _other_crosses(tick: Tick, g: tuple[float, ...]) -> bool:
    last = tick.last
    mid = (tick.bid + tick.ask) * 0.5
    return (last == last and (last <= g[4] or last >= g[5])) or mid <= g[6] or mid >= g[7]
