"""IB's message budget at the adapter (a mixin of ``IBBroker``): every message to IB is spent from one budget.

IB counts every message a client sends (about 50 a second; beyond, error 100 and a dropped connection).  The
engine's ``MessageBudget`` (core/message_budget.py) is the only throttle: ib_async's own FIFO throttle (45
requests a second, then a pause) is switched off (``Client.MaxRequests = 0``) so it can never reorder or hold back
what the budget released - an exit it delayed behind data requests would be exactly what the budget prevents.

* Orders and cancels are queued by the order executor and reach ``place_order`` / ``cancel_order`` only when
  released (exits first, most at risk first).  Cancels the adapter sends on its own (those held while the
  connection was down) are queued the same way.
* Requests (contract details, daily bars, what-if, market data, completed orders) wait for their turn in
  ``_paced`` before ib_async writes them.
* ib_async's start-up sync inside ``connect`` cannot wait: each of its messages is ``charge``d as it leaves.

``wire_messages`` counts every message handed to the socket; a test checks it against what the budget spent, so a
path that bypasses the budget fails it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from ib_async import IB

from tickguard.adapters.broker import BrokerError
from tickguard.core.message_budget import MessageBudget
from tickguard.core.throttle import Lane

POLL_S = 0.001  # the shortest sleep of a request waiting for budget (the budget names the time; this bounds it)


class PacingMixin:
    ib: IB
    _connecting: bool
    _budget: MessageBudget | None
    wire_messages: int

    @staticmethod
    def pacing_clock() -> int:
        """IB paces in wall seconds; a monotonic clock, so a clock step cannot open or close the budget."""
        return time.monotonic_ns()

    def _install_wire_count(self) -> None:
        """Switch ib_async's throttle off and count every message it writes (charging the start-up sync's)."""
        client = self.ib.client
        client.MaxRequests = 0
        write = client.sendMsg

        def counted(msg: str | None) -> None:
            if msg:
                self.wire_messages += 1
                if self._connecting and self._budget is not None:
                    self._budget.charge()
            write(msg)

        client.sendMsg = counted  # type: ignore[method-assign]

    def use_budget(self, budget: MessageBudget) -> None:
        """The engine's budget: from now on every request waits for it (``_paced``)."""
        self._budget = budget

    async def _paced(self, lane: Lane, what: str) -> None:
        """Wait until the budget lets one message of ``lane`` go; raises ``BrokerError`` if it is refused (its lane
        is full, or it waited too long).  Without a budget (a bare adapter in a test) it goes at once."""
        budget = self._budget
        if budget is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = f"{what} #{next(_serial)}"
        refused = budget.send(key, lane, lambda: _resolve(future, None),
                              refused=lambda why: _resolve(future, BrokerError(why)))
        if refused is not None:
            raise BrokerError(refused)
        try:
            while not future.done():
                due = budget.next_deadline_ns()
                wait = POLL_S if due is None else max(POLL_S, (due - self.pacing_clock()) / 1e9)
                await asyncio.wait({future}, timeout=wait)
                budget.drain()
        except asyncio.CancelledError:
            budget.withdraw(key)
            raise
        future.result()

    def _send_paced(self, lane: Lane, what: str, send: Callable[[], None]) -> None:
        """Queue a message the adapter sends on its own (not through the executor) in the budget."""
        if self._budget is None or self._budget.send(f"{what} #{next(_serial)}", lane, send) is not None:
            send()


_serial = itertools.count(1)


def _resolve(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)
