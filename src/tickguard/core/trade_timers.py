"""Per-trade deadlines (time stops, entry timeouts, exit retries) in one heap, driven by the caller's clock.

The core never sleeps or reads the wall clock: the runtime asks ``next_deadline`` to know when to wake and
calls ``due`` with the time it woke at, so simulation, replay and live share one timing code path.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator


class TradeTimers:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, str]] = []
        self._seq = itertools.count()  # ties keep the order they were set in

    def set(self, due_ns: int, trade_id: str, what: str) -> None:
        heapq.heappush(self._heap, (due_ns, next(self._seq), trade_id, what))

    def next_deadline(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now_ns: int) -> Iterator[tuple[str, str]]:
        """(trade id, what) of every timer due at ``now_ns``, earliest first; each is handed out once."""
        while self._heap and self._heap[0][0] <= now_ns:
            _, _, trade_id, what = heapq.heappop(self._heap)
            yield trade_id, what
