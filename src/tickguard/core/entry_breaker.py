"""Flood control per account: the same rejection again and again pauses that account's new entries.

Why: an engine that keeps sending orders the broker keeps refusing for one reason (no buying power, no trading
permission, a market closed, its own queue full) floods the gateway for nothing, and IB watches each account's
order-to-execution ratio. So ``rejections`` refusals of one account for the same reason within ``window_ns``
trip the breaker: the account's new entries are refused, with the reason and until when, for ``cool_down_ns``.
Exits are never paused - they protect open positions - and other accounts go on. Reasons are compared without
their figures ("insufficient buying power (needs 29,197, has 24,516)" is one reason whatever the amounts).
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass

SECOND = 1_000_000_000
_FIGURES = re.compile(r"\d[\d,.]*")


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    rejections: int = 5
    window_ns: int = 60 * SECOND
    cool_down_ns: int = 300 * SECOND


@dataclass(frozen=True, slots=True)
class Trip:
    account: str
    reason: str
    count: int
    since_ns: int
    until_ns: int

    def describe(self) -> str:
        return (f"new entries of account {self.account or '(default)'} are paused: {self.count} orders refused for "
                f"the same reason ({self.reason}) within the breaker's window; exits still go; entries resume "
                f"{(self.until_ns - self.since_ns) / SECOND:g} s after the last of them")


class EntryBreaker:
    def __init__(self, limits: BreakerLimits) -> None:
        self.limits = limits
        self._recent: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        self.trips: dict[str, Trip] = {}  # account -> its latest trip (in force while now < until_ns)
        self.tripped = 0

    @staticmethod
    def reason_key(reason: str) -> str:
        return _FIGURES.sub("#", reason.strip().lower())

    def record(self, account: str, reason: str, now_ns: int) -> Trip | None:
        """A refused order of ``account``; returns the trip when this one trips (or extends) the breaker."""
        key = self.reason_key(reason)
        times = self._recent[(account, key)]
        times.append(now_ns)
        while times and times[0] <= now_ns - self.limits.window_ns:
            times.popleft()
        if len(times) < self.limits.rejections:
            return None
        trip = Trip(account, key, len(times), now_ns, now_ns + self.limits.cool_down_ns)
        self.trips[account] = trip
        self.tripped += 1
        return trip

    def paused(self, account: str, now_ns: int) -> Trip | None:
        """The trip that pauses ``account``'s new entries now, if any."""
        trip = self.trips.get(account)
        return trip if trip is not None and now_ns < trip.until_ns else None
