"""Virtual time for the fake gateway, and IB's pacing rules measured in wall time.

Why two clocks: the simulated venue lives in *virtual* time (a pure function of the seed), while IB's
pacing limits are about how fast a *real* client talks over a real socket. The gateway maps one to the
other with a ``speed`` factor (virtual seconds per wall second); tests set ``speed=0`` and drive
virtual time explicitly, so every outcome is deterministic, while pacing still counts wall seconds.
"""

from __future__ import annotations

import array
import collections
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

NS = 1_000_000_000

WallClock = Callable[[], float]
"""Monotonic wall time in seconds (injectable so pacing can be tested without sleeping)."""


class VirtualClock:
    """Maps wall time onto venue time: ``virtual = base_virtual + (wall - base_wall) * speed``.

    ``speed == 0`` freezes the mapping: virtual time then moves only through explicit advances,
    which call :meth:`rebase` so the automatic mapping never runs backwards after a manual jump.
    """

    def __init__(self, start_ns: int, speed: float, wall: WallClock = time.monotonic) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.speed = speed
        self._wall = wall
        self._base_wall = wall()
        self._base_ns = start_ns

    def target_ns(self) -> int:
        """Where virtual time should be now, according to wall time and speed."""
        elapsed = self._wall() - self._base_wall
        return self._base_ns + int(elapsed * self.speed * NS)

    def rebase(self, now_ns: int) -> None:
        """Restart the mapping at ``now_ns`` (after an explicit advance or a speed change)."""
        self._base_wall = self._wall()
        self._base_ns = now_ns

    def set_speed(self, speed: float, now_ns: int) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.rebase(now_ns)
        self.speed = speed


@dataclass(frozen=True, slots=True)
class PacingLimits:
    """IB's message-rate rule, made configurable.

    ``max_msgs_per_s`` messages per ``window_s`` are allowed; every message beyond that is refused
    with error 100. A *violation* is one burst over the limit (refusals less than ``window_s`` after
    the first refusal of the burst belong to it); ``violations_to_drop`` violations within
    ``violation_window_s`` close the connection, as the real gateway does when the excess persists.
    """

    max_msgs_per_s: int = 50
    window_s: float = 1.0
    violations_to_drop: int = 3
    violation_window_s: float = 5.0


class MessagePacer:
    """Sliding-window message counter for one connection.

    Besides deciding (:meth:`admit`), it keeps the wall time of every message it counted, admitted or
    refused, so a test can ask afterwards how fast the client really talked (:meth:`max_in_window`)
    instead of only whether the gateway refused something. The record grows by 8 bytes per message
    for the life of the pacer - the fake gateway serves test and development sessions, not days.
    """

    def __init__(self, limits: PacingLimits, wall: WallClock = time.monotonic) -> None:
        self.limits = limits
        self._wall = wall
        self._accepted: collections.deque[float] = collections.deque()
        self._violations: collections.deque[float] = collections.deque()
        self._burst_started: float | None = None
        self.times = array.array("d")  # wall time of every counted message, in arrival order
        self.refused = 0
        self.violations = 0  # bursts over the limit since the connection opened
        self.drops = 0  # 1 once the session closed the connection for persistent violations

    @property
    def received(self) -> int:
        """Messages counted so far, admitted or refused."""
        return len(self.times)

    def admit(self) -> bool:
        """Count one incoming message; False if it must be refused with error 100."""
        now = self._wall()
        self.times.append(now)
        window = self._accepted
        while window and window[0] <= now - self.limits.window_s:
            window.popleft()
        if len(window) < self.limits.max_msgs_per_s:
            window.append(now)
            return True
        self.refused += 1
        if self._burst_started is None or now - self._burst_started >= self.limits.window_s:
            self._burst_started = now
            self._violations.append(now)
            self.violations += 1
        return False

    def should_drop(self) -> bool:
        """True once violations have persisted long enough to close the connection."""
        now = self._wall()
        while self._violations and self._violations[0] <= now - self.limits.violation_window_s:
            self._violations.popleft()
        return len(self._violations) >= self.limits.violations_to_drop

    def max_in_window(self, window_s: float | None = None) -> int:
        """The most messages received in any window of ``window_s`` (default: the limit's window)."""
        return max_in_window(self.times, self.limits.window_s if window_s is None else window_s)


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """The most of the sorted ``times`` inside one half-open window ``(t - window_s, t]``.

    Half-open exactly as :meth:`MessagePacer.admit` forgets a message (``<= now - window_s``), so two
    messages ``window_s`` apart never share a window here either. Two pointers, O(n): a window worth
    reporting always ends at a message, so only windows ending at each ``times[j]`` need counting.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    best = 0
    first = 0
    for last, t in enumerate(times):
        while times[first] <= t - window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


@dataclass(frozen=True, slots=True)
class PacingReport:
    """How one API client id talked to the gateway, over all of its connections (see
    :meth:`~.server.FakeGateway.pacing_report`). ``drops``: connections closed for persistent violations."""

    client_id: int
    received: int
    refused: int
    violations: int
    max_in_window: int
    drops: int

    @classmethod
    def of(cls, client_id: int, pacers: Iterable[MessagePacer], window_s: float) -> PacingReport:
        """Merge the pacers of one client id's connections; their message times are merged before
        ``max_in_window`` is measured, so a burst that straddles a reconnect is still seen as one."""
        pacers = list(pacers)
        times = sorted(t for p in pacers for t in p.times)
        return cls(
            client_id=client_id,
            received=len(times),
            refused=sum(p.refused for p in pacers),
            violations=sum(p.violations for p in pacers),
            max_in_window=max_in_window(times, window_s),
            drops=sum(p.drops for p in pacers),
        )


@dataclass(frozen=True, slots=True)
class HistoryPacingLimits:
    """IB's historical-data pacing: no identical request within ``identical_s``, and at most
    ``same_contract_max`` requests for one contract within ``same_contract_s``."""

    identical_s: float = 15.0
    same_contract_max: int = 5
    same_contract_s: float = 2.0


class HistoryPacer:
    """Decides whether a historical request is a pacing violation (error 162).

    Only admitted requests are recorded, so a refused request does not extend the penalty.
    """

    def __init__(self, limits: HistoryPacingLimits, wall: WallClock = time.monotonic) -> None:
        self.limits = limits
        self._wall = wall
        self._identical: dict[Hashable, float] = {}
        self._per_contract: dict[Hashable, collections.deque[float]] = collections.defaultdict(collections.deque)

    def admit(self, contract_key: Hashable, request_key: Hashable) -> bool:
        now = self._wall()
        last = self._identical.get(request_key)
        if last is not None and now - last < self.limits.identical_s:
            return False
        recent = self._per_contract[contract_key]
        while recent and recent[0] <= now - self.limits.same_contract_s:
            recent.popleft()
        if len(recent) >= self.limits.same_contract_max:
            return False
        recent.append(now)
        self._identical[request_key] = now
        return True
