"""The exit rehearsal: while the engine waits for the broker, an exit's code runs on the stop nearest the market,
and changes nothing.

Why: an exit is cold by nature - thousands of ticks are evaluated between two - and cold, its code costs several
times what it costs warm: binding an exit's order row took ~140 us after other work had used the CPU's caches,
~15 us warm (the same call, measured apart), and ``bench/exit_path.py`` showed every part of the exit path paying
it (its ``--parts``).  Low-latency trading systems answer this by running the path they must take fast, often,
without acting on it ("cache warming"); this does that for the part of tickguard's exit path that can run without
acting.  Measured gain: ``bench/wire_to_wire.py`` and README "Performance".

What runs: the trade manager builds the exit of the symbol's nearest stop as a fire would build it
(``TradeManager.rehearse_exit``: trigger, key, quantity, limit), the executor's record of it and its journal row
are made, the row bound as SQLite would bind it and encoded as its exit-log record (``JournalRecorder.rehearse``),
and the broker adapter builds its order (``rehearse_order``: at IB, ib_async's ``Order``, encoded as the connected
client would encode it by a client that has no socket - ``adapters/ib/placing.SilentClient``).  What does not: nothing
is appended, written, committed, queued or sent; no order id is taken; no trade, order or counter changes - every
call used is read-only by contract (tests/runtime/test_exit_rehearsal.py holds them to it: journal, gateway and
engine state before and after).  The message budget, the commit and the send itself are not rehearsed: they act.

When: every ``[engine] exit_rehearsal_ms`` (0: never) of real time while the engine runs, on a timer of the event
loop - between two engine steps, never inside one, so no evaluation waits for it; a tick that arrives during one
waits for its end (~0.1 ms at IB, half of it ib_async's encoding).  A turn that finds events waiting for the engine
(read from the socket in the same turn of the loop) rehearses after the step they woke; a turn after which the
engine's thread was on the CPU ``SATURATED`` of the time (a storm: the engine never idle) is skipped - a storm costs
no rehearsal.  An engine between quotes rehearses (a quiet market's exit is the coldest); one that has had no quote
for ``QUIET_S`` (a closed market, a feed down) does not - nothing can cross, and the CPU is not spent (up to ~9 % of
a core at 2 ms at IB on an EPYC, ~15 % on a slower Xeon: 1 ms gave the same p50 wire to wire for twice the CPU -
README "Fourteenth pass").  Symbols take turns.  A rehearsal that raises (the exit's own code would fail on that
trade) is logged - once per symbol and kind of failure - and counted
(``tickguard_exit_rehearsals_total{outcome="failed"}``, alert TickguardExitRehearsalFailing); the engine goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from tickguard.adapters.broker import BrokerOrder
from tickguard.core.model import OrderIntent
from tickguard.core.trade_manager import TradeManager
from tickguard.runtime.busy_poll import spin_clock
from tickguard.runtime.journal_recorder import JournalRecorder
from tickguard.runtime.order_executor import broker_order
from tickguard.runtime.order_record import OrderRecord

log = logging.getLogger(__name__)
SATURATED = 0.9  # the engine's thread on the CPU this share of the time since the last turn: a storm, no rehearsal
QUIET_S = 1.0  # no quote for this long (a closed market, a feed down): nothing can cross - no rehearsal, no CPU spent


def _no_spin() -> int:
    """The polling time of a loop that never busy-polls."""
    return 0


class ExitRehearsal:
    def __init__(self, trades: TradeManager, session: str, recorder: JournalRecorder | None,
                 build_order: Callable[[BrokerOrder], None] | None, interval_s: float,
                 busy: Callable[[], bool] | None = None, quote_age_s: Callable[[], float] | None = None,
                 cpu_ns: Callable[[], int] = time.thread_time_ns, wall_ns: Callable[[], int] = time.perf_counter_ns,
                 spun_ns: Callable[[], int] | None = None) -> None:
        """``build_order``: the broker's order made and not sent (None: the broker has no such step).  What the
        broker may tell (None: not known): ``busy``, it holds events for the engine - the rehearsal runs after the
        engine's step; ``quote_age_s``, seconds since its last quote - past ``QUIET_S`` no turn rehearses.
        ``cpu_ns`` / ``wall_ns``: the engine thread's CPU time and real time - a turn after which the thread was on
        the CPU ``SATURATED`` of the time or more is skipped (a storm: the engine is never idle); ``spun_ns``: of
        that CPU time, what the loop spent busy-polling its sockets (idle; default: the running loop's own figure if
        it busy-polls, runtime/busy_poll.py)."""
        self._trades = trades
        self._busy = busy
        self._quote_age_s = quote_age_s
        self._cpu_ns = cpu_ns
        self._wall_ns = wall_ns
        self._spun_ns = spun_ns  # None: the running loop's busy-polling time, if it busy-polls (runtime/busy_poll.py)
        self._last: tuple[int, int] | None = None  # (cpu, wall) at the last turn
        self.saturated = 0  # turns skipped: the engine's thread was (nearly) always on the CPU since the turn before
        self.quiet = 0  # turns skipped: no quote came for QUIET_S
        self.dropped = 0  # turns whose rehearsal found events waiting again after the step
        self._session = session
        self._recorder = recorder
        self._build_order = build_order
        self._interval_s = interval_s
        self._timer: asyncio.TimerHandle | None = None
        self._symbols: list[str] = []
        self.rehearsals = 0
        self.failures = 0
        self._told: set[tuple[str, str]] = set()  # (symbol, exception type) of the failures logged already

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Rehearse every interval on the running event loop (its timer: real time, whatever the broker's clock)
        while the block runs - the engine's loop.  A callback of the loop runs between two engine steps, never
        inside one."""
        loop = asyncio.get_running_loop()
        after: list[asyncio.Handle] = []  # a rehearsal queued behind a step (``due``), cancelled with the block
        # a busy-polling loop's thread is on the CPU while it waits: that time is not work, and not a storm
        spun = self._spun_ns or spin_clock(loop) or _no_spin

        def after_step() -> None:
            after.clear()
            if self._busy is not None and self._busy():
                self.dropped += 1
            else:
                self.run()

        def due() -> None:
            self._timer = loop.call_later(self._interval_s, due)
            now, last = (self._cpu_ns() - spun(), self._wall_ns()), self._last
            self._last = now
            if last is not None and now[0] - last[0] >= SATURATED * (now[1] - last[1]):
                self.saturated += 1
            elif self._quote_age_s is not None and self._quote_age_s() > QUIET_S:
                self.quiet += 1
            elif self._busy is not None and self._busy():
                if not after:  # the engine's step, woken by these events, is queued already: it goes first
                    after.append(loop.call_soon(after_step))
            else:
                self.run()

        self._timer = loop.call_later(self._interval_s, due)
        try:
            yield
        finally:
            self._timer.cancel()
            self._timer = None
            for handle in after:
                handle.cancel()

    def outcomes(self) -> dict[str, int]:
        """The turns so far by outcome (the metric ``tickguard_exit_rehearsals_total``)."""
        return {"rehearsed": self.rehearsals, "failed": self.failures, "saturated": self.saturated,
                "quiet": self.quiet, "dropped": self.dropped}

    def run(self) -> OrderIntent | None:
        """Rehearse the exit of the next symbol's nearest stop; returns its intent (None: nothing to rehearse)."""
        if not self._symbols:
            self._symbols = self._trades.book.symbols()
            if not self._symbols:
                return None
        symbol = self._symbols.pop()
        try:
            made = self._trades.rehearse_exit(symbol)
            if made is None:
                return None
            intent, data = made
            record = OrderRecord(intent, placed_through=self._session)
            if self._recorder is not None:
                self._recorder.rehearse(record, data)
            if self._build_order is not None:
                self._build_order(broker_order(intent))
        except Exception as exc:  # the exit's own code raised on this trade: said, and the engine goes on
            self.failures += 1
            told = (symbol, type(exc).__name__)  # once per symbol and kind of failure: a message may name a trade
            if told not in self._told:
                self._told.add(told)
                log.warning("exit rehearsal of %s's nearest stop failed (%s: %s) - its exit may fail the same way when "
                            "it fires (counted in tickguard_exit_rehearsals_total{outcome=\"failed\"}; said once per "
                            "symbol and kind of failure)", symbol, type(exc).__name__, exc, exc_info=True)
            return None
        self.rehearsals += 1
        return intent
