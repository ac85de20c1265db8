"""Order throttling: IB's message budget, spent on the most urgent messages first.

Why: IB accepts about 50 API messages a second from one client and counts every message (an order, a modify, a
cancel, a what-if, a data request); beyond it the gateway answers error 100 and may drop the connection - in an
exit storm, exactly when positions must be closed. So every message goes through one ``Throttle``: it is queued
by urgency (its ``Lane``, then its risk, then its arrival) and released only as fast as the budget allows, the
most urgent first. A less urgent message never goes while a more urgent one waits for budget.

The budget is two rules, both kept, in exact integers:

* a sliding window: never more than ``rate`` messages in any window ``(t - window_ns, t]``. This is IB's rule as
  the gateway counts it. The last ``rate`` send times are kept; one more may go when the oldest of them has left
  the window.
* a token bucket (GCRA, the "generic cell rate algorithm"): at most ``burst`` messages back to back, refilled at
  ``rate`` per ``window_ns``. The window alone lets a whole window's budget leave in one instant and then
  nothing, so a little network jitter can put two such blocks into one of the gateway's windows; the bucket
  spaces a storm into ``burst`` at once and then an even stream of one per ``window_ns / rate``. The bucket
  alone allows ``burst + rate - 1`` messages in one window (a full bucket, then a window of refill), so it does
  not keep IB's rule by itself. (With ``burst == rate``, the default, a storm leaves in blocks of ``rate`` a
  window apart; a smaller ``burst`` spreads it.)

  No floats: time is scaled by ``rate``, so each message moves the theoretical arrival time (TAT) on by exactly
  ``window_ns``. A message may go at ``now`` when ``now * rate >= TAT - (burst - 1) * window_ns``; sending it
  sets ``TAT = max(TAT, now * rate) + window_ns``. In any interval of length ``d`` this sends at most
  ``burst + floor(d * rate / window_ns)`` messages.

Lanes ENTRY, WHAT_IF and DATA are refusable: each has a bound on how many may wait and on how long
(``ThrottleLimits.queue_max`` / ``wait_max_ns``); past either, the message is refused, unsent (a ``Refusal``
the caller reports). Exits, cancels and modifies are never refused and never dropped: refusing them would leave
a position unprotected or an order working that was meant to stop. Their queue needs no bound because a message
with the key of a queued one replaces it (a modify of a queued modify), keeping its place (``seq``) and its
``queued_ns``, so the queue holds at most one message per order and verb, and a stream of modifies never starves.

The clock is injected (``time.monotonic_ns`` live) and must not run backwards. Every operation is O(log n):
heaps ordered by (lane, risk, seq) and, per refusable lane, by queued time; replaced, withdrawn and expired
entries are discarded lazily when they reach the top, and the heaps are rebuilt when mostly stale.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any

SECOND = 1_000_000_000
_SLACK = 64  # stale heap entries tolerated beyond twice the live ones before a rebuild


class Lane(IntEnum):
    """A message's priority class: a lower value is more urgent, and is always released first."""

    EXIT_CRITICAL = 0  # an exit past its stop: every moment of delay is a loss
    EXIT = 1
    CANCEL_MODIFY = 2
    ENTRY = 3
    WHAT_IF = 4
    DATA = 5


REFUSABLE = frozenset({Lane.ENTRY, Lane.WHAT_IF, Lane.DATA})
DEFAULT_QUEUE_MAX: Mapping[Lane, int] = MappingProxyType({Lane.ENTRY: 500, Lane.WHAT_IF: 200, Lane.DATA: 1000})
DEFAULT_WAIT_MAX_NS: Mapping[Lane, int] = MappingProxyType(
    {Lane.ENTRY: 30 * SECOND, Lane.WHAT_IF: 10 * SECOND, Lane.DATA: 60 * SECOND}
)


def _lane_bounds(name: str, defaults: Mapping[Lane, int], given: Mapping[Lane, int], least: int) -> Mapping[Lane, int]:
    """The defaults overridden by ``given``; only refusable lanes have bounds (an exit is never refused)."""
    merged = {**defaults, **{Lane(lane): value for lane, value in given.items()}}
    for lane, value in merged.items():
        if lane not in REFUSABLE:
            raise ValueError(f"{name}: {lane.name} has no bound - only ENTRY, WHAT_IF and DATA may be refused")
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name}[{lane.name}] must be an integer of at least {least}, got {value!r}")
    return MappingProxyType(merged)


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """The budget (``rate`` messages per ``window_ns``, at most ``burst`` back to back) and the refusable lanes'
    bounds. 45 a second stays under IB's 50 with room for what the client library sends by itself."""

    rate: int = 45
    window_ns: int = SECOND
    burst: int = 45
    queue_max: Mapping[Lane, int] = field(default_factory=lambda: DEFAULT_QUEUE_MAX)
    wait_max_ns: Mapping[Lane, int] = field(default_factory=lambda: DEFAULT_WAIT_MAX_NS)

    def __post_init__(self) -> None:
        if not isinstance(self.rate, int) or self.rate <= 0:
            raise ValueError(f"rate must be a positive integer (messages per window), got {self.rate!r}")
        if not isinstance(self.window_ns, int) or self.window_ns <= 0:
            raise ValueError(f"window_ns must be a positive integer, got {self.window_ns!r}")
        if not isinstance(self.burst, int) or not 1 <= self.burst <= self.rate:
            raise ValueError(f"burst must be an integer from 1 to rate ({self.rate}), got {self.burst!r}")
        object.__setattr__(self, "queue_max", _lane_bounds("queue_max", DEFAULT_QUEUE_MAX, self.queue_max, 1))
        object.__setattr__(self, "wait_max_ns", _lane_bounds("wait_max_ns", DEFAULT_WAIT_MAX_NS, self.wait_max_ns, 0))


@dataclass(frozen=True, slots=True)
class Message:
    """A queued message. Released by (lane, risk, seq): ``risk`` orders a lane, smaller first (e.g. ticks to
    the stop, then -qty; a lane's risks must be comparable), and ``seq`` (arrival) breaks ties, FIFO."""

    key: str  # unique while queued, e.g. an order's key and verb; the same key again replaces the message
    lane: Lane
    payload: object
    queued_ns: int  # when first queued; a replacement keeps it
    seq: int  # arrival order; a replacement keeps it
    risk: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusable message that was not sent: its lane's queue was full, or it waited too long."""

    message: Message
    reason: str


@dataclass(frozen=True, slots=True)
class ThrottleStats:
    """Counters for metrics, per lane (wait = release time - queued_ns)."""

    depth: dict[Lane, int]
    sent: dict[Lane, int]
    refused: dict[Lane, int]
    wait_ns_total: dict[Lane, int]
    wait_ns_max: dict[Lane, int]


class Throttle:
    """The message queue in front of the gateway, and the budget it is released by (module docstring)."""

    __slots__ = ("_clock", "_depth", "_expiry", "_heap", "_queued", "_refused", "_sends", "_sent", "_seq",
                 "_stamp", "_tat", "_wait_max", "_wait_total", "limits")

    def __init__(self, limits: ThrottleLimits, clock: Callable[[], int]) -> None:
        self.limits = limits
        self._clock = clock
        self._queued: dict[str, tuple[Message, int]] = {}  # key -> (message, stamp of its live heap entry)
        self._heap: list[tuple[Lane, tuple[Any, ...], int, int, str]] = []  # (lane, risk, seq, stamp, key)
        self._expiry: dict[Lane, list[tuple[int, int, str]]] = {lane: [] for lane in REFUSABLE}  # (queued, seq, key)
        self._sends: deque[int] = deque(maxlen=limits.rate)  # the last ``rate`` send times
        self._tat: int | None = None  # the bucket's theoretical arrival time, in ns x rate; None: nothing sent
        self._seq = 0
        self._stamp = 0  # heap entries are told apart by stamp: a replaced message's old entry is stale
        self._depth = dict.fromkeys(Lane, 0)
        self._sent = dict.fromkeys(Lane, 0)
        self._refused = dict.fromkeys(Lane, 0)
        self._wait_total = dict.fromkeys(Lane, 0)
        self._wait_max = dict.fromkeys(Lane, 0)

    # ------------------------------------------------------------------------------------------ the queue

    def offer(self, key: str, lane: Lane, payload: object, risk: tuple[Any, ...] = ()) -> Refusal | None:
        """Queue a message, or replace the queued one of the same key (it keeps its place and queued time).
        A refusable lane at its bound refuses a message that would add to it: returned, never queued."""
        lane = Lane(lane)
        old = self._queued.get(key)
        if old is None:
            self._seq += 1
            message = Message(key, lane, payload, self._clock(), self._seq, risk)
        else:
            message = Message(key, lane, payload, old[0].queued_ns, old[0].seq, risk)
        adds = old is None or old[0].lane != lane
        if adds and lane in REFUSABLE and self._depth[lane] >= self.limits.queue_max[lane]:
            self._refused[lane] += 1
            bound = self.limits.queue_max[lane]
            return Refusal(message, f"{lane.name} queue full: {self._depth[lane]} messages waiting, at its bound "
                                    f"of {bound}; {key} refused, not sent")
        self._enqueue(message, None if old is None else old[0], None if old is None else old[1])
        return None

    def _enqueue(self, message: Message, old: Message | None, old_stamp: int | None) -> None:
        if old is not None and old_stamp is not None and old.lane == message.lane and old.risk == message.risk:
            self._queued[message.key] = (message, old_stamp)  # the same place: no new heap entry
            return
        self._stamp += 1
        self._queued[message.key] = (message, self._stamp)
        heapq.heappush(self._heap, (message.lane, message.risk, message.seq, self._stamp, message.key))
        if old is None or old.lane != message.lane:
            if old is not None:
                self._depth[old.lane] -= 1
            self._depth[message.lane] += 1
            if message.lane in REFUSABLE:
                heapq.heappush(self._expiry[message.lane], (message.queued_ns, message.seq, message.key))
        self._compact()

    def withdraw(self, key: str) -> Message | None:
        """Take a queued message out unsent (the cancel of an order still queued): it spends no budget."""
        entry = self._queued.pop(key, None)
        if entry is None:
            return None
        self._depth[entry[0].lane] -= 1
        self._compact()
        return entry[0]

    def _compact(self) -> None:
        """Rebuild a heap that is mostly stale entries, so replacements and withdrawals cannot grow it unbounded."""
        if len(self._heap) > 2 * len(self._queued) + _SLACK:
            self._heap = [(m.lane, m.risk, m.seq, stamp, key) for key, (m, stamp) in self._queued.items()]
            heapq.heapify(self._heap)
        for lane, heap in self._expiry.items():
            if len(heap) > 2 * self._depth[lane] + _SLACK:
                live = [m for m, _ in self._queued.values() if m.lane == lane]
                self._expiry[lane] = [(m.queued_ns, m.seq, m.key) for m in live]
                heapq.heapify(self._expiry[lane])

    # ---------------------------------------------------------------------------------------- the budget

    def _budget_ready_ns(self) -> int | None:
        """The earliest time both rules allow one more message (None: nothing limits it yet)."""
        lim = self.limits
        times = []
        if len(self._sends) == lim.rate:
            times.append(self._sends[0] + lim.window_ns)  # the oldest of the last ``rate`` leaves the window
        if self._tat is not None:  # now * rate >= TAT - (burst - 1) * window_ns, rounded up to a whole ns
            times.append(-(((lim.burst - 1) * lim.window_ns - self._tat) // lim.rate))
        return max(times, default=None)

    def _spend(self, now: int) -> None:
        self._sends.append(now)
        scaled = now * self.limits.rate
        self._tat = (scaled if self._tat is None else max(self._tat, scaled)) + self.limits.window_ns

    def charge(self, lane: Lane = Lane.DATA) -> None:
        """Count a message that went out without being queued (the IB client's own start-up requests): it cannot be
        held back, but the budget must know it was spent, or the window would let too many others through."""
        self._spend(self._clock())
        self._sent[Lane(lane)] += 1

    def room(self) -> int:
        """How many messages both rules would let go now, back to back (what a burst may still spend)."""
        lim = self.limits
        now = self._clock()
        # the sends are in time order (appended at a monotonic now): those still in the window are found by
        # bisection, not by walking up to ``rate`` of them - this runs for every exit an engine step releases early
        window = lim.rate - (len(self._sends) - bisect_right(self._sends, now - lim.window_ns))
        if self._tat is None:
            return min(window, lim.burst)
        scaled = now * lim.rate
        bucket = lim.burst + (scaled - max(self._tat, scaled)) // lim.window_ns  # the GCRA rule, solved for k
        return max(0, min(window, bucket))

    def release(self, upto: Lane | None = None) -> list[Message]:
        """Remove and return, most urgent first, as many queued messages as the budget allows now (of lanes up to
        ``upto`` only, when given: what is less urgent stays queued)."""
        now = self._clock()
        out: list[Message] = []
        while self._heap:
            lane, _, _, stamp, key = self._heap[0]
            entry = self._queued.get(key)
            if entry is None or entry[1] != stamp:
                heapq.heappop(self._heap)  # replaced, withdrawn or expired
                continue
            if upto is not None and lane > upto:
                break  # the most urgent message left is of a lane not released now
            ready = self._budget_ready_ns()
            if ready is not None and ready > now:
                break  # the budget is spent: nothing behind the most urgent message may go either
            heapq.heappop(self._heap)
            del self._queued[key]
            self._spend(now)
            message = entry[0]
            wait = now - message.queued_ns
            self._depth[message.lane] -= 1
            self._sent[message.lane] += 1
            self._wait_total[message.lane] += wait
            self._wait_max[message.lane] = max(self._wait_max[message.lane], wait)
            out.append(message)
        return out

    def next_release_ns(self) -> int | None:
        """The earliest time a queued message could be released (now, if it can at once; None: none queued)."""
        if not self._queued:
            return None
        now = self._clock()
        ready = self._budget_ready_ns()
        return now if ready is None else max(now, ready)

    # -------------------------------------------------------------------------------------------- expiry

    def _oldest(self, lane: Lane) -> Message | None:
        """The longest-waiting queued message of a refusable lane, discarding stale entries on the way."""
        heap = self._expiry[lane]
        while heap:
            _, seq, key = heap[0]
            entry = self._queued.get(key)
            if entry is not None and entry[0].seq == seq and entry[0].lane == lane:
                return entry[0]
            heapq.heappop(heap)
        return None

    def expire(self) -> list[Refusal]:
        """Remove and return the refusable messages that waited longer than their lane's ``wait_max_ns``."""
        now = self._clock()
        out: list[Refusal] = []
        for lane in sorted(REFUSABLE):
            bound = self.limits.wait_max_ns[lane]
            while (message := self._oldest(lane)) is not None and now - message.queued_ns > bound:
                heapq.heappop(self._expiry[lane])
                del self._queued[message.key]
                self._depth[lane] -= 1
                self._refused[lane] += 1
                waited = now - message.queued_ns
                out.append(Refusal(message, f"{lane.name} message {message.key} waited {waited / SECOND:.3f} s, "
                                            f"longer than the lane's bound of {bound / SECOND:g} s; not sent"))
        return out

    def next_expiry_ns(self) -> int | None:
        """The earliest time ``expire`` would refuse a queued message (None: no refusable message queued)."""
        times = [m.queued_ns + self.limits.wait_max_ns[lane] + 1
                 for lane in REFUSABLE if (m := self._oldest(lane)) is not None]
        return min(times, default=None)

    # --------------------------------------------------------------------------------------------- stats

    def __bool__(self) -> bool:
        """Anything queued (the engine loop's per-step check: nothing to do when False)."""
        return bool(self._queued)

    def depth(self) -> dict[Lane, int]:
        """How many messages wait, per lane."""
        return dict(self._depth)

    def stats(self) -> ThrottleStats:
        """A snapshot of the counters, as plain ints per lane."""
        return ThrottleStats(self.depth(), dict(self._sent), dict(self._refused), dict(self._wait_total),
                             dict(self._wait_max))
