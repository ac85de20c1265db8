"""When the garbage collector may run: never inside an engine step, and a full pass over new objects only.

Why: CPython's full (generation 2) collection walks every tracked object.  With thousands of open trades that is
80-150 ms at a time, every second or two under a quote storm - measured as the longest exits of
``bench/wire_to_wire.py`` (a stop crossed during a collection waits for it).  Nearly everything the engine keeps
lives for the whole run (trades, legs, order records, contracts, bars), so the engine moves what exists into the
collector's permanent generation (``gc.freeze``) after start-up and then every ``interval_s``: a full collection
then walks only what was made since.  Objects that die later are still freed by reference counting; only a
reference cycle that becomes garbage after being frozen is kept - the price, small for an engine whose state only
grows, and paid for a stop never delayed by a 100 ms collection.

Between steps: CPython collects when an allocation tips a generation's count over its threshold - wherever that
allocation is, a crossing's step (a few hundred objects, from the tick to the exit order) included: a collection
there sits between the quote and the order (0.08 ms for a young one, 1.5 ms at p99 of all, up to 8 ms -
``bench/wire_to_wire.py --probe``).  So the automatic collector is off while a step runs (``paused``), which
makes at its end (after the step's exits are out) the young collection CPython would have made (``after_step``).
Outside the steps the automatic collector runs as usual (its young collections; full ones see below): a thread or a
server in the same process never waits for a step to free its cycles. CPython counts net allocations (allocations
minus frees), so a step that frees as much as it makes leaves nothing due at its end - most collections still come
while ib_async decodes a socket read (measured: 59 of 304 at a step's end at 10,000 quotes/s). Found by an
independent review: a first version also made full collections whenever generation 2's count passed its threshold -
~30 ms walks of a large heap that CPython would have skipped - and collected one young collection early (``>=``
where CPython has ``>``).

No automatic full collection while the engine loop runs (``watching``): CPython makes one whenever a quarter as
many objects as the last one left have been promoted since, and each walks everything not frozen - so a burst of
long-lived objects (a user opening thousands of trades: each an ib_async Trade with its seven events, order
records, legs) was walked again by every full collection until the next timed freeze (53k, 104k, 158k, 211k
objects in a row, 30-230 ms each), and such walks of the start-up's leftovers inside the quote stream were the
longest exits (47 and 55 ms, a 12 ms one later; ``bench/wire_to_wire.py --probe``, 5,000 trades).  Freezing what
survived each one (tried) still left one walk per burst in the stream.  And they reclaimed almost nothing: 0 or 46
objects each (``collected``, same runs) - the engine's long-lived objects stay alive.  So while the loop runs
generation 2's threshold is out of reach (restored when it ends); the young collections go on as before, and
what they promote is frozen by the timed freeze.  The price: a reference cycle that survives two young
collections and then dies is never freed (frozen by the next timed freeze, with no collection first) - as one
that died after a freeze always was; before, one that died within the 10 s before a freeze was still freed by
a full collection.  Measured: the same simulated session's peak memory with and without (README, ninth pass).
An ``interval_s`` of 0 (frozen after start-up only) leaves CPython's full collections as they are.  CPython
3.14's incremental collector has no generation 2 threshold: there ``watching`` changes nothing (``FULL_THRESHOLD``).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable


class CollectorPolicy:
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self.freezes = 0
        self.collections = [0, 0]  # young collections by generation, made by ``after_step``
        self._was_enabled: list[bool] = []  # per ``paused`` block under way (a step inside a step: nested)

    def freeze(self) -> None:
        """Collect what is garbage now (once), then move every survivor out of the collector's sight."""
        gc.collect()
        gc.freeze()
        self.freezes += 1
        self._last = self._clock()

    def paused(self) -> CollectorPolicy:
        """``with policy.paused():`` the automatic collector off for the block (an engine step); at its end, what
        CPython would have collected by then is (``after_step``), then the collector is as it was.  (A plain
        context manager, not a generator: it wraps every engine step.)"""
        self._was_enabled.append(gc.isenabled())
        gc.disable()
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        try:
            if len(self._was_enabled) == 1:  # the outermost block: never inside a step
                self.after_step()
        finally:
            if self._was_enabled.pop():
                gc.enable()

    def after_step(self) -> int | None:
        """Make the young collection CPython would have made by now: generation 1 when its count is over its
        threshold, else 0, once the youngest count is over its own (CPython's strict ``>``).  Never a full one:
        CPython itself skips a full collection until a quarter of the long-lived objects are new (a count Python
        cannot read); outside the engine loop full collections stay the automatic collector's, and inside it there
        are none (``watching``).  Returns the generation collected, or None."""
        count0, count1 = gc.get_count()[:2]
        limit0, limit1 = gc.get_threshold()[:2]
        if limit0 <= 0 or count0 <= limit0:
            return None
        generation = 1 if count1 > limit1 else 0
        gc.collect(generation)
        self.collections[generation] += 1
        return generation

    def maybe_freeze(self) -> None:
        """From the engine loop: freeze again once ``interval_s`` has passed (without the full collection: that is
        the pause this avoids; the young generations were just collected by the runtime as usual)."""
        if self.interval_s > 0 and self._clock() - self._last >= self.interval_s:
            gc.freeze()
            self.freezes += 1
            self._last = self._clock()

    def watching(self) -> _Watching:
        """``with policy.watching():`` (the engine loop) CPython makes no full collection on its own: generation
        2's threshold out of reach for the block, then as it was.  Only while the loop runs: an engine whose loop
        has ended (a test's, a stopped one) leaves the process's collector as it found it."""
        return _Watching(self.interval_s > 0 and FULL_THRESHOLD)


NEVER = 2**31 - 1  # a count CPython's generation 2 never passes (a C int)
FULL_THRESHOLD = sys.version_info < (3, 14)  # generation 2's threshold decides full collections (not from 3.14 on)


class _Watching:
    """``CollectorPolicy.watching``'s block (a block inside a block - a loop run from a loop - restores only what
    it changed)."""

    def __init__(self, active: bool) -> None:
        self._active = active
        self._saved: int | None = None

    def __enter__(self) -> None:
        first, second, third = gc.get_threshold()
        if self._active and third != NEVER:
            self._saved = third
            gc.set_threshold(first, second, NEVER)

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            first, second, _ = gc.get_threshold()
            gc.set_threshold(first, second, self._saved)
            self._saved = None
