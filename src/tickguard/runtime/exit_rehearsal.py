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
(read from the socket in the same turn of the loop) rehearses after the step they woke; a turn that finds the
engine has not waited for the broker once since the turn before (a storm: the engine saturated) is skipped - a
storm costs no rehearsal.  An engine between quotes rehearses (a quiet market's exit is the
coldest); one that has had no quote for ``QUIET_S`` (a closed market, a feed down) does not - nothing can cross, and
the CPU is not spent (up to ~18 % of a core at 1 ms, at IB).
Symbols take turns.  A rehearsal that raises (the exit's own code would fail on that trade) is logged once per
message and counted; the engine goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from tickguard.adapters.broker import BrokerOrder
from tickguard.core.model import OrderIntent
from tickguard.core.trade_manager import TradeManager
from tickguard.runtime.journal_recorder import JournalRecorder
from tickguard.runtime.order_executor import broker_order
from tickguard.runtime.order_record import OrderRecord

log = logging.getLogger(__name__)
QUIET_S = 1.0  # no quote for this long (a closed market, a feed down): nothing can cross - no rehearsal, no CPU spent
_TOLD_MAX = 100  # distinct failure messages logged at most (each once): a failure per trade must not flood the log


class ExitRehearsal:
    def __init__(self, trades: TradeManager, session: str, recorder: JournalRecorder | None,
                 build_order: Callable[[BrokerOrder], None] | None, interval_s: float,
                 busy: Callable[[], bool] | None = None, waits: Callable[[], int] | None = None,
                 quote_age_s: Callable[[], float] | None = None) -> None:
        """``build_order``: the broker's order made and not sent (None: the broker has no such step).  What the
        broker may tell (None: not known): ``busy``, it holds events for the engine - the rehearsal runs after the
        engine's step; ``waits``, how often the engine has waited for its events - not once since the last turn is a
        saturated engine, and the turn is skipped; ``quote_age_s``, seconds since its last quote - past ``QUIET_S``
        no turn rehearses."""
        self._trades = trades
        self._busy = busy
        self._waits = waits
        self._quote_age_s = quote_age_s
        self._waited = -1  # ``waits()`` at the last turn
        self.saturated = 0  # turns skipped: the engine never waited for events since the turn before
        self.quiet = 0  # turns skipped: no quote came for QUIET_S
        self.skipped = 0  # turns whose rehearsal found events waiting again after the step: dropped
        self._session = session
        self._recorder = recorder
        self._build_order = build_order
        self._interval_s = interval_s
        self._timer: asyncio.TimerHandle | None = None
        self._symbols: list[str] = []
        self.rehearsals = 0
        self.failures = 0
        self._told: set[str] = set()  # failure messages logged already

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Rehearse every interval on the running event loop (its timer: real time, whatever the broker's clock)
        while the block runs - the engine's loop.  A callback of the loop runs between two engine steps, never
        inside one."""
        loop = asyncio.get_running_loop()

        def after_step() -> None:
            if self._busy is not None and self._busy():
                self.skipped += 1
            else:
                self.run()

        def due() -> None:
            self._timer = loop.call_later(self._interval_s, due)
            waited = self._waits() if self._waits is not None else None
            if waited is not None and waited == self._waited:
                self.saturated += 1
            elif self._quote_age_s is not None and self._quote_age_s() > QUIET_S:
                self.quiet += 1
            elif self._busy is not None and self._busy():
                loop.call_soon(after_step)  # the engine's step, woken by these events, is queued already: it goes first
            else:
                self.run()
            self._waited = -1 if waited is None else waited

        self._timer = loop.call_later(self._interval_s, due)
        try:
            yield
        finally:
            self._timer.cancel()
            self._timer = None

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
            message = f"{type(exc).__name__}: {exc}"
            if message not in self._told and len(self._told) < _TOLD_MAX:
                self._told.add(message)
                log.warning("exit rehearsal of %s's nearest stop failed (%s) - its exit may fail the same way when it "
                            "fires", symbol, message, exc_info=True)
            return None
        self.rehearsals += 1
        return intent
