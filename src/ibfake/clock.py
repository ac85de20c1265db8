"""Virtual time for the fake gateway, and IB's pacing rules measured in wall time.

Why two clocks: the simulated venue lives in *virtual* time (a pure function of the seed), while IB's
pacing limits are about how fast a *real* client talks over a real socket. The gateway maps one to the
other with a ``speed`` factor (virtual seconds per wall second); tests set ``speed=0`` and drive
virtual time explicitly, so every outcome is deterministic, while pacing still counts wall seconds.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Hashable
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
    """Sliding-window message counter for one connection."""

    def __init__(self, limits: PacingLimits, wall: WallClock = time.monotonic) -> None:
        self.limits = limits
        self._wall = wall
        self._accepted: collections.deque[float] = collections.deque()
        self._violations: collections.deque[float] = collections.deque()
        self._burst_started: float | None = None
        self.refused = 0

    def admit(self) -> bool:
        """Count one incoming message; False if it must be refused with error 100."""
        now = self._wall()
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
        return False

    def should_drop(self) -> bool:
        """True once violations have persisted long enough to close the connection."""
        now = self._wall()
        while self._violations and self._violations[0] <= now - self.limits.violation_window_s:
            self._violations.popleft()
        return len(self._violations) >= self.limits.violations_to_drop


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
