"""The engine's own figures that nothing else keeps: stage latencies of an order, tick-batch timing, journal
commits, event-loop lag, exits by reason and rejections by code.

Why not ``prometheus_client`` objects here: the tick path must stay cheap and free of locks, and the engine is
also run without metrics (benchmarks, tests, replay).  So the engine records into plain counters and
fixed-bucket histograms (``Histogram.observe``: one ``bisect`` and two additions, no lock, no allocation), and
``runtime/metrics.py`` turns them into Prometheus families only when scraped.

Clocks: compute stages (tick -> intent -> wire) are measured on the wall clock, because that is what a trader
waits for; broker round trips (order -> ack, order -> fill) on the broker's clock, which is the wall at IB and
virtual time in the simulator (so simulated ack and fill latencies are the simulated market's).  A tick's
arrival is its ``recv_ns`` when the broker stamps ticks with the wall clock (IB: the socket read that carried
it); otherwise (simulator: virtual time) the wall time its engine step began.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tickguard.adapters.broker import FillEvent, OrderStatusEvent
from tickguard.core.model import OrderIntent, Tick
from tickguard.core.order_state import OrderStatus
from tickguard.store.journal import CommitReceipt

# Bucket upper bounds in ns.  Latency: 50 us .. 10 s, dense where an exit lives (0.1 - 20 ms).
LATENCY_BOUNDS_NS: tuple[int, ...] = tuple(int(s * 1e9) for s in (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# Broker round trips (ack, fill) reach seconds (a resting limit order, a slow simulated exchange).
ROUND_TRIP_BOUNDS_NS: tuple[int, ...] = tuple(int(s * 1e9) for s in (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0))
BATCH_BOUNDS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

LAG_WINDOW_S = 60  # the event-loop lag's maximum is over this many seconds
EXIT_REASONS = frozenset({"stop_loss", "trailing_stop", "break_even", "take_profit", "time_stop"})
OTHER = "other"


class Histogram:
    """Fixed buckets, counted per bucket (made cumulative only when exported)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for c in self.counts:
            running += c
            out.append(running)
        return out


def exit_reason(intent: OrderIntent) -> str:
    """A bounded label for why an exit was decided: its trigger's rule, or ``other`` (a user's close, a restart's
    resumed close)."""
    rule = intent.trigger.rule if intent.trigger is not None else ""
    return rule if rule in EXIT_REASONS else OTHER


def order_kind(intent: OrderIntent) -> str:
    return "exit" if intent.is_exit else "entry"


@dataclass(slots=True)
class _InFlight:
    kind: str
    sent_ns: int  # broker clock
    acked: bool = False
    filled: bool = False
    ended: bool = False  # IB reported it filled before its first execution arrived


@dataclass(slots=True)
class Telemetry:
    """What the engine records for metrics (module docstring).  ``wall_ticks``: the broker stamps ticks with the
    wall clock, so a tick's ``recv_ns`` is its arrival."""

    wall_ticks: bool = False
    wall: Callable[[], int] = time.time_ns
    started_s: float = field(default_factory=time.time)
    steps: int = 0
    tick_eval: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_NS))
    batch: Histogram = field(default_factory=lambda: Histogram(BATCH_BOUNDS))
    tick_to_intent: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_NS))
    intent_to_wire: dict[str, Histogram] = field(default_factory=lambda: {
        k: Histogram(LATENCY_BOUNDS_NS) for k in ("entry", "exit")})
    ack: dict[str, Histogram] = field(default_factory=lambda: {
        k: Histogram(ROUND_TRIP_BOUNDS_NS) for k in ("entry", "exit")})
    fill: dict[str, Histogram] = field(default_factory=lambda: {
        k: Histogram(ROUND_TRIP_BOUNDS_NS) for k in ("entry", "exit")})
    commit: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_NS))
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_NS))
    _lag_seconds: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=LAG_WINDOW_S))
    exits: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=lambda: {"entry": 0, "exit": 0})
    rejected: dict[tuple[str, str], int] = field(default_factory=dict)  # (IB error code, entry / exit) -> orders
    step_wall_ns: int = 0
    _in_flight: dict[int, _InFlight] = field(default_factory=dict)  # broker order id -> its round trip so far
    _commits_seen: int = 0

    # ------------------------------------------------------------------------------------ tick path

    def step_began(self) -> None:
        self.steps += 1
        self.step_wall_ns = self.wall()

    def evaluated(self, ticks: int, elapsed_ns: int) -> None:
        self.tick_eval.observe(elapsed_ns)
        self.batch.observe(ticks)

    def decided(self, intent: OrderIntent, quote: Callable[[str], Tick | None]) -> int:
        """An intent about to be handed to the executor; returns the wall time of the decision, which its order
        record carries to ``on_sent``.  ``quote``: a symbol's last tick - the one that fired an exit when its
        sequence number is the trigger's (an exit fired by a timer or a user has no tick, and no tick latency)."""
        now = self.wall()
        if not intent.is_exit:
            return now
        reason = exit_reason(intent)
        self.exits[reason] = self.exits.get(reason, 0) + 1
        trigger = intent.trigger
        if trigger is not None and trigger.tick_seq >= 0:
            tick = quote(intent.symbol)
            if tick is not None and tick.seq == trigger.tick_seq:
                arrived = tick.recv_ns if self.wall_ticks else self.step_wall_ns
                self.tick_to_intent.observe(max(0, now - arrived))
        return now

    # ------------------------------------------------------------------------------ order round trip

    def on_sent(self, intent: OrderIntent, order_id: int | None, broker_now_ns: int, decided_ns: int | None) -> None:
        """An order written to the broker; ``decided_ns``: when it was decided (None for a retry or a re-send after
        a restart: no decision of this moment)."""
        kind = order_kind(intent)
        self.sent[kind] += 1
        if decided_ns is not None:
            self.intent_to_wire[kind].observe(max(0, self.wall() - decided_ns))
        if order_id is not None and order_id >= 0:
            self._in_flight[order_id] = _InFlight(kind, broker_now_ns)

    def on_status(self, event: OrderStatusEvent, broker_now_ns: int) -> None:
        status = OrderStatus(event.status)
        flight = self._in_flight.get(event.order_id)
        if status is OrderStatus.REJECTED:
            code = str(event.code) if event.code is not None and event.code > 0 else "none"
            kind = flight.kind if flight is not None else "entry" if event.ref.endswith(":entry") else "exit"
            self.rejected[(code, kind)] = self.rejected.get((code, kind), 0) + 1
        if flight is None:
            return
        if not flight.acked:
            flight.acked = True
            self.ack[flight.kind].observe(max(0, broker_now_ns - flight.sent_ns))
        # over - unless IB said "filled" before the execution itself (it may): the fill still times the order
        if status.is_final:
            if flight.filled or status is not OrderStatus.FILLED:
                del self._in_flight[event.order_id]
            else:
                flight.ended = True

    def on_fill(self, event: FillEvent, broker_now_ns: int) -> None:
        flight = self._in_flight.get(event.order_id)
        if flight is None or flight.filled:
            return
        flight.filled = True
        if not flight.acked:  # a fill is an acknowledgement too
            flight.acked = True
            self.ack[flight.kind].observe(max(0, broker_now_ns - flight.sent_ns))
        self.fill[flight.kind].observe(max(0, broker_now_ns - flight.sent_ns))
        if flight.ended:
            del self._in_flight[event.order_id]

    # --------------------------------------------------------------------------------------- journal

    def on_commit(self, receipt: CommitReceipt) -> None:
        """The journal's after-commit hook: one observation per commit (hooks may run twice for one)."""
        journal = receipt.journal
        if journal.commits != self._commits_seen:
            self._commits_seen = journal.commits
            self.commit.observe(journal.last_commit_ns)

    # ------------------------------------------------------------------------------------ event loop

    def loop_lagged(self, lag_ns: int, now_s: float | None = None) -> None:
        self.loop_lag.observe(lag_ns)
        second = int(time.monotonic() if now_s is None else now_s)
        window = self._lag_seconds
        if window and window[-1][0] == second:
            if lag_ns > window[-1][1]:
                window[-1] = (second, lag_ns)
        else:
            window.append((second, lag_ns))

    def lag_max(self, now_s: float | None = None) -> int:
        """The largest lag of the last ``LAG_WINDOW_S`` seconds - the same answer for every reader (two Prometheus
        servers, a person with curl), unlike a maximum reset by each scrape."""
        since = int(time.monotonic() if now_s is None else now_s) - LAG_WINDOW_S
        return max((lag for second, lag in self._lag_seconds if second > since), default=0)


async def watch_loop_lag(telemetry: Telemetry, interval_s: float = 0.1) -> None:
    """Sleep ``interval_s`` again and again and record how late each wake-up is: the time anything ready on this
    loop (a quote, an order, a scrape) waits behind other work.  Runs until cancelled."""
    loop = asyncio.get_running_loop()
    interval_ns = int(interval_s * 1e9)
    while True:
        before = time.perf_counter_ns()
        await asyncio.sleep(interval_s)
        telemetry.loop_lagged(max(0, time.perf_counter_ns() - before - interval_ns))
        if not loop.is_running():  # pragma: no cover - the loop is closing
            return
