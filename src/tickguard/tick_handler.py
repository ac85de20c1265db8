"""Tick intake: validation, per-symbol conflation into batch slots, and the order symbols are evaluated in.

A slot keeps, per price source, the last price and the high and low since the previous evaluation (plus
the largest pull-back from a running high and bounce from a running low, which is what a trailing stop
needs to see a touch *inside* the batch).  Memory is one slot per symbol, however many ticks arrive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tickguard.model import Tick, TriggerSource

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


class TickHandler:
    """Validates ticks and conflates them into per-symbol slots until the engine evaluates them.

    ``priority`` maps a symbol to its smallest distance to stop (in ATR): the batch is handed on in that
    order so the trades most at risk are evaluated - and their exits sent - first.
    """

    def __init__(self, priority: Callable[[str], float] | None = None) -> None:
        self._slots: dict[str, SymbolBatch] = {}
        self._dirty: list[SymbolBatch] = []
        self._last_ts: dict[str, int] = {}
        self._priority = priority
        self.counters = TickCounters()
        self.last_quote: dict[str, Tick] = {}

    def on_tick(self, tick: Tick) -> bool:
        """Accept or drop one tick; True when accepted."""
        problem = tick_problem(tick, self._last_ts.get(tick.symbol))
        if problem is not None:
            self.counters.drop(problem)
            return False
        self._last_ts[tick.symbol] = tick.ts_ns
        slot = self._slots.get(tick.symbol)
        if slot is None:
            slot = self._slots[tick.symbol] = SymbolBatch(tick.symbol)
        if slot.count == 0:
            self._dirty.append(slot)
        slot.add(tick)
        self.last_quote[tick.symbol] = tick
        self.counters.accepted += 1
        return True

    def on_ticks(self, ticks: Iterable[Tick]) -> None:
        for tick in ticks:
            self.on_tick(tick)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def drain(self) -> list[SymbolBatch]:
        """The symbols with new ticks, most at-risk first.  Callers must ``reset()`` each slot after use."""
        dirty = self._dirty
        self._dirty = []
        if self._priority is not None and len(dirty) > 1:
            dirty.sort(key=lambda slot: self._priority(slot.symbol))  # type: ignore[misc]
        return dirty
