"""When the garbage collector may walk the engine's long-lived objects: only the young ones, ever.

Why: CPython's full (generation 2) collection walks every tracked object.  With thousands of open trades that is
80-150 ms at a time, every second or two under a quote storm - measured as the longest exits of
``bench/wire_to_wire.py`` (a stop crossed during a collection waits for it).  Nearly everything the engine keeps
lives for the whole run (trades, legs, order records, contracts, bars), so the engine moves what exists into the
collector's permanent generation (``gc.freeze``) after start-up and then every ``interval_s``: a full collection
then walks only what was made since.  Objects that die later are still freed by reference counting; only a
reference cycle that becomes garbage after being frozen is kept - the price, small for an engine whose state only
grows, and paid for a stop never delayed by a 100 ms collection.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


class FreezePolicy:
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self.freezes = 0

    def freeze(self) -> None:
        """Collect what is garbage now (once), then move every survivor out of the collector's sight."""
        gc.collect()
        gc.freeze()
        self.freezes += 1
        self._last = self._clock()

    def maybe_freeze(self) -> None:
        """From the engine loop: freeze again once ``interval_s`` has passed (without the full collection: that is
        the pause this avoids; the young generations were just collected by the runtime as usual)."""
        if self.interval_s > 0 and self._clock() - self._last >= self.interval_s:
            gc.freeze()
            self.freezes += 1
            self._last = self._clock()
