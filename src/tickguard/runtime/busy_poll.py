"""Busy-polling the event loop's sockets while the market is busy, so a crossing quote finds the engine awake.

Why: a process that waits in ``epoll_wait`` is asleep, and so is its CPU when nothing else runs there.  Waking it
costs the kernel's wake-up and - on a virtual machine, where an idle virtual CPU is a host thread that must be
scheduled again - often far more: on a session's 2-core VM a one-byte round trip between two processes took
20-40 us back to back and p99 ~1 ms, max ~5 ms after 10 ms of quiet (``bench/machine_wakeup.py``).  Every crossing
quote pays that before any of the engine's code runs.  A first try from outside (every wait polled 500 us, the
engine on a CPU of its own: ``bench/wire_to_wire.py --pin``, 10,000 quotes/s) gave p99 9.2 and 7.8 ms against
28.7 and 47.9 ms sleeping; this module's rules, measured the same way the same day, did not repeat it (README,
"Performance", fifteenth pass) - hence off by default until a quieter machine decides.

How: once a wait has returned a socket event, the next time the loop has nothing to do its selector polls without
waiting (``epoll_wait`` with timeout 0) for up to ``spin_ns`` of that idle time before it sleeps - the window opens
when the work the event brought is done, not when the event came (an engine step can take longer than the window).
A socket event during the spin is returned at once and opens a new window after its work; a timer due during the
spin ends it on time (asyncio's timeout) and what is left of the window is spun at the next wait; a window spun
out with nothing come closes, and the loop sleeps until an event.  Timers never open a window: an engine whose only
wake-ups are its own timers sleeps as before, and a closed market costs nothing (a wake-up from another thread,
``call_soon_threadsafe`` through asyncio's self-pipe, is a socket event and does).  Nothing else of the loop
changes.

The price is CPU: a whole core while the quiet between quotes is shorter than ``spin_ns``, and ``spin_ns`` after
each burst of them otherwise.  It pays on a machine that gives the engine a core; on one where the engine shares
its cores with IB Gateway and others, the spin takes CPU they need (``[engine] busy_poll_us``, off by default: its
gain on this project's 2-core VMs is not established - README, "Performance", fifteenth pass; not used when the
process may run on one CPU only).
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)


class BusyPollSelector(selectors.BaseSelector):
    """A selector (the platform's default, or ``inner``) that spins - polls without waiting - for up to ``spin_ns``
    once the loop is idle after a socket event, before it sleeps."""

    def __init__(self, spin_ns: int, clock: Callable[[], int] = time.perf_counter_ns,
                 inner: selectors.BaseSelector | None = None,
                 cpu_clock: Callable[[], int] = time.thread_time_ns) -> None:
        """``clock``: real time (the window, the timeouts); ``cpu_clock``: the thread's CPU time, what ``spun_ns``
        counts (a spin the scheduler interrupted spent less CPU than real time - and the storm rule that reads it
        compares CPU with CPU)."""
        if spin_ns <= 0:
            raise ValueError(f"spin_ns must be positive, not {spin_ns}")
        self._inner = inner if inner is not None else selectors.DefaultSelector()
        self.spin_ns = spin_ns
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._armed = False  # a wait returned a socket event since the last window was spun out
        self._window_end: int | None = None  # the open window's end (None: it opens at the next wait)
        self.spins = 0  # waits that polled before returning or sleeping (tests, curiosity)
        self.spun_ns = 0  # CPU time spent polling: on the CPU, but idle (``spin_clock``)
        self.sleeps = 0  # waits that slept in the kernel

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            ready = self._inner.select(0)
        else:
            spun, left = self._spin(timeout) if self._armed else (None, timeout)
            if spun is None:
                self.sleeps += 1
                ready = self._inner.select(left)
            else:
                ready = spun
        if ready:  # the window opens at the next wait, when the work these events bring is done
            self._armed, self._window_end = True, None
        return ready

    def _spin(self, timeout: float | None) -> tuple[list[tuple[selectors.SelectorKey, int]] | None, float | None]:
        """Poll until a socket event, the end of the window or the timeout: ``(events, None)`` - ``[]`` when the
        timeout came first - or ``(None, what is left of the timeout)`` when the window is spun out (closed: the
        caller sleeps)."""
        now = self._clock()
        end = self._window_end
        if end is None:
            end = self._window_end = now + self.spin_ns
        due = None if timeout is None else now + int(timeout * 1e9)
        stop = end if due is None or end < due else due
        self.spins += 1
        poll = self._inner.select
        clock = self._clock
        cpu_began = self._cpu_clock()
        while now < stop:
            ready = poll(0)
            if ready:
                self.spun_ns += self._cpu_clock() - cpu_began
                return ready, None
            now = clock()
        self.spun_ns += self._cpu_clock() - cpu_began
        if due is not None and due < end:  # asyncio's timer first: its callback runs, the window stays open
            return [], None
        self._armed, self._window_end = False, None  # spun out with nothing come: sleep until an event
        return None, None if due is None else max(0.0, (due - now) / 1e9)


def spin_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], int] | None:
    """The CPU time ``loop``'s selector has spent polling so far (ns), if it busy-polls: time its thread was on the
    CPU doing nothing - the exit rehearsal's storm rule takes it out of the thread's CPU time."""
    selector = getattr(loop, "_selector", None)  # asyncio's selector loops keep theirs there
    if not isinstance(selector, BusyPollSelector):
        return None
    return lambda: selector.spun_ns


def event_loop_factory(busy_poll_us: float, cpus: int | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``tickguard run`` runs on (``asyncio.Runner``'s ``loop_factory``): None - asyncio's default
    loop - unless ``busy_poll_us`` > 0 and the process may run on two CPUs or more (``cpus``: how many; default,
    its affinity; on one CPU a spin would only take turns from IB Gateway and the rest); then a loop on a
    ``BusyPollSelector``, made the thread's current loop as ``asyncio.run``'s is (a factory's loop is not, and
    ib_async's event library, eventkit, schedules on the current one: found by an independent review)."""
    if busy_poll_us <= 0:
        return None
    cpus = len(os.sched_getaffinity(0)) if cpus is None else cpus
    if cpus < 2:
        log.info("[engine] busy_poll_us = %g not used: this process may run on one CPU only", busy_poll_us)
        return None
    spin_ns = max(1, round(busy_poll_us * 1_000))  # the config's smallest positive values included

    def make() -> asyncio.AbstractEventLoop:
        log.info("the event loop polls its sockets for up to %g us once idle after a socket event, before it "
                 "sleeps ([engine] busy_poll_us)", busy_poll_us)
        loop = asyncio.SelectorEventLoop(BusyPollSelector(spin_ns))
        asyncio.set_event_loop(loop)
        return loop

    return make
