"""Tick intake: validation, and which ticks are evaluated against the trades, most at-risk symbol first.

Two modes, identical in what they decide:

* ``batch``: a chunk of ticks (whatever arrived since the last call) is split into windows of at most
  ``window_ns`` of arrival time.  In a window, a tick whose prices stay strictly inside its symbol's guard
  (see ``guards``) cannot cross a level, set a new best or touch a trail group, so it only becomes the
  symbol's last quote.  A tick at or beyond a guard *flags* its symbol; flagged symbols are then evaluated
  in order of their distance to stop, each symbol's ticks in arrival order from its first crossing tick
  on (a later tick is evaluated if it still crosses the guard as it is then), and each symbol's exits are
  handed on (``after_symbol``) before the next symbol is looked at.  Nothing is conflated: every tick
  that may matter is evaluated on its own, so results equal per-tick evaluation while most ticks of a storm
  cost a few comparisons.
* ``per_tick``: every valid tick goes through the trade manager - the classic engine, kept as baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tickguard.core.guards import Guard
from tickguard.core.model import Tick
from tickguard.core.price_grid import FAR
from tickguard.core.trail_groups import Marks

_INF = FAR


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
    """Why a tick must not be acted on, or None.  Locked quotes (bid == ask) are valid; crossed are not.

    Prices are grid units (``price_grid``): the adapter turned every "no price" into 0, so a missing or
    non-positive bid or ask is one problem here; a last of 0 is a quote-only feed's, and fine."""
    bid, ask = tick.bid, tick.ask
    if bid <= 0 or ask <= 0:
        return "non_positive_price"
    if bid > ask:
        return "crossed_quote"
    if tick.last < 0:
        return "bad_last_price"
    if tick.size < 0 or tick.size != tick.size:
        return "bad_size"
    if last_ts is not None and tick.ts_ns < last_ts:
        return "time_backwards"
    return None


class Evaluator(Protocol):
    """What the tick handler needs from the trade manager."""

    def guard(self, symbol: str) -> Guard: ...

    def marks_for(self, symbol: str) -> Marks: ...

    def watch_guards(self, listener: Callable[[str], None]) -> None: ...

    def evaluate(self, tick: Tick) -> None: ...

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


class SymbolState:
    """Everything the handler keeps per symbol, reached with one dict lookup per tick: the symbol's guard
    (copied from the trade manager, dropped in place when its levels change), the trail-group marks it
    advances, the last timestamp and quote, and the ticks of a window still waiting for evaluation."""

    __slots__ = ("ask_high", "ask_low", "bid_high", "bid_low", "fresh", "guard", "last_tick", "last_ts", "marks",
                 "pending", "symbol", "watches_other")

    def __init__(self, symbol: str, marks: Marks) -> None:
        self.symbol = symbol
        self.marks = marks
        self.last_ts = 0
        self.last_tick: Tick | None = None
        self.pending: list[Tick] | None = None
        self.drop_guard()

    def drop_guard(self) -> None:
        """Make every tick cross until the guard is fetched again."""
        self.bid_low = self.ask_low = _INF
        self.bid_high = self.ask_high = -_INF
        self.watches_other = False
        self.fresh = False
        self.guard = Guard()

    def load(self, guard: Guard) -> None:
        self.bid_low, self.bid_high, self.ask_low, self.ask_high = (guard.bid_low, guard.bid_high, guard.ask_low,
                                                                    guard.ask_high)
        self.watches_other = guard.watches_last_or_mid
        self.guard = guard
        self.fresh = True

    def crosses(self, tick: Tick) -> bool:
        """Advance the trail marks with the tick, then: is it at or beyond the guard on any source?

        The batch loop (``TickHandler._scan``) runs an inlined copy of this test - one call per tick is a
        fifth of the hot path's cost - so a change here must be made there too."""
        bid, ask, marks = tick.bid, tick.ask, self.marks
        if bid > marks.bmark:
            marks.bmark = bid
        if ask < marks.amark:
            marks.amark = ask
        return (bid <= self.bid_low or bid >= self.bid_high or ask <= self.ask_low or ask >= self.ask_high
                or bid <= marks.bmark - marks.bd or ask >= marks.amark + marks.ad
                or (self.watches_other and self.guard.last_or_mid_crosses(tick)))


class TickHandler:
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
        self._states: dict[str, SymbolState] = {}
        self.counters = TickCounters()
        self.stats = BatchStats()
        if evaluator is not None:
            evaluator.watch_guards(self._drop_guard)

    def _drop_guard(self, symbol: str) -> None:
        state = self._states.get(symbol)
        if state is not None and state.fresh:
            state.drop_guard()

    def _state(self, symbol: str) -> SymbolState:
        state = self._states.get(symbol)
        if state is None:
            marks = self.evaluator.marks_for(symbol) if self.evaluator is not None else Marks()
            state = self._states[symbol] = SymbolState(symbol, marks)
        return state

    # ----------------------------------------------------------------------------------------- quotes

    def quote(self, symbol: str) -> Tick | None:
        state = self._states.get(symbol)
        return None if state is None else state.last_tick

    @property
    def last_quote(self) -> dict[str, Tick]:
        """Every symbol's last valid quote (a snapshot, for views and warm-up; not for the tick path)."""
        return {s: st.last_tick for s, st in self._states.items() if st.last_tick is not None}

    def seed_quotes(self, quotes: dict[str, Tick]) -> None:
        for symbol, tick in quotes.items():
            self._state(symbol).last_tick = tick

    # ---------------------------------------------------------------------------------------- intake

    def process(self, ticks: list[Tick]) -> None:
        """Handle a chunk of ticks in arrival order, one arrival-time window at a time."""
        n = len(ticks)
        if n and ticks[-1].recv_ns - ticks[0].recv_ns <= self.window_ns:  # the usual case: one window
            self.stats.last_backlog = 0
            self._window(ticks)
            return
        start = 0
        while start < n:
            end = _window_end(ticks, start, self.window_ns)
            self.stats.last_backlog = n - end
            self._window(ticks[start:end])
            start = end

    def _window(self, ticks: list[Tick]) -> None:
        t0 = time.perf_counter_ns()
        if self.mode == "per_tick" or self.evaluator is None:
            accepted, evaluated = self._per_tick(ticks)
        else:
            flagged: list[SymbolState] = []
            accepted = self._scan(ticks, flagged)
            evaluated = self._evaluate_flagged(flagged) if flagged else 0
        elapsed = time.perf_counter_ns() - t0
        self.counters.accepted += accepted
        stats = self.stats
        stats.batches += 1
        stats.ticks += accepted
        stats.evaluated += evaluated
        stats.last_size = accepted
        if accepted > stats.max_size:
            stats.max_size = accepted
        stats.last_eval_ns = elapsed
        stats.total_eval_ns += elapsed
        if self.on_batch is not None:
            self.on_batch(stats)

    def _accept(self, state: SymbolState, tick: Tick) -> bool:
        """Validate a tick against its symbol; an invalid one is counted under the name of its problem."""
        problem = tick_problem(tick, state.last_ts)
        if problem is not None:
            self.counters.drop(problem)
            return False
        state.last_ts = tick.ts_ns
        return True

    def _scan(self, ticks: list[Tick], flagged: list[SymbolState]) -> int:
        """The hot loop of batch mode: validate each tick, flag its symbol if it may cross, else keep it as
        the symbol's last quote.  Returns the number of valid ticks."""
        states = self._states
        accepted = 0
        for tick in ticks:
            state = states.get(tick.symbol) or self._state(tick.symbol)
            bid, ask = tick.bid, tick.ask
            # a valid tick: 0 < bid <= ask, in grid units; last absent (0) or positive; size >= 0; time forwards
            if (not (0 < bid <= ask < _INF) or tick.ts_ns < state.last_ts or not 0 <= tick.last < _INF
                    or not tick.size >= 0):
                self.counters.drop(tick_problem(tick, state.last_ts) or "invalid")
                continue
            state.last_ts = tick.ts_ns
            accepted += 1
            if state.pending is not None:  # flagged earlier in this window: evaluated later, in arrival order
                state.pending.append(tick)
                continue
            marks = state.marks  # inlined SymbolState.crosses (keep the two identical)
            if bid > marks.bmark:
                marks.bmark = bid
            if ask < marks.amark:
                marks.amark = ask
            if ((bid <= state.bid_low or bid >= state.bid_high or ask <= state.ask_low or ask >= state.ask_high
                    or bid <= marks.bmark - marks.bd or ask >= marks.amark + marks.ad
                    or (state.watches_other and state.guard.last_or_mid_crosses(tick)))
                    and (state.fresh or self._crosses_refreshed(state, tick))):
                state.pending = [tick]
                flagged.append(state)
            else:
                state.last_tick = tick
        return accepted

    def _crosses_refreshed(self, state: SymbolState, tick: Tick) -> bool:
        """The guard was stale: fetch it, and test the tick again."""
        assert self.evaluator is not None
        state.load(self.evaluator.guard(state.symbol))
        return state.crosses(tick)

    def _still_crosses(self, state: SymbolState, tick: Tick) -> bool:
        return state.crosses(tick) if state.fresh else self._crosses_refreshed(state, tick)

    def _evaluate_flagged(self, flagged: list[SymbolState]) -> int:
        """Evaluate the flagged symbols, nearest to its stop first; returns how many ticks were evaluated."""
        evaluator = self.evaluator
        assert evaluator is not None
        if len(flagged) > 1:
            flagged.sort(key=lambda s: evaluator.symbol_risk_at(s.symbol, s.pending[0]))  # type: ignore[index]
        evaluated = 0
        for state in flagged:
            pending, state.pending = state.pending or [], None
            for i, tick in enumerate(pending):
                state.last_tick = tick
                # the first tick crossed; a later one only matters if it crosses the guard as it is now
                if i == 0 or self._still_crosses(state, tick):
                    evaluator.evaluate(tick)
                    evaluated += 1
            if self.after_symbol is not None:
                self.after_symbol()
        return evaluated

    def _per_tick(self, ticks: list[Tick]) -> tuple[int, int]:
        """Baseline mode: every valid tick is evaluated, and its exits handed on, one by one."""
        evaluator = self.evaluator
        accepted = evaluated = 0
        for tick in ticks:
            state = self._states.get(tick.symbol) or self._state(tick.symbol)
            if not self._accept(state, tick):
                continue
            accepted += 1
            state.last_tick = tick
            if evaluator is not None:
                evaluator.evaluate(tick)
                evaluated += 1
                if self.after_symbol is not None:
                    self.after_symbol()
        return accepted, evaluated


def _window_end(ticks: list[Tick], start: int, window_ns: int) -> int:
    """End (exclusive) of the window that starts at ``start``: ticks received within ``window_ns`` of it."""
    n = len(ticks)
    if ticks[-1].recv_ns - ticks[start].recv_ns <= window_ns:
        return n
    limit = ticks[start].recv_ns + window_ns
    end = start + 1
    while end < n and ticks[end].recv_ns <= limit:
        end += 1
    return end
