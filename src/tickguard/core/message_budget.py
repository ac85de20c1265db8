"""One message budget for everything the engine sends to the broker: orders, cancels, data and what-if requests.

Why a layer over ``Throttle``: its payloads are what to *do* once a message may go - send an order, let a waiting
request proceed - and what to do if it may not (an entry refused at its lane's bound, or expired). Every user of
the budget (the order executor, the IB adapter's requests) offers its messages here, and whoever drains the budget
runs them, most urgent first, so the one budget is spent in one priority order whoever asked. Pure: the engine
loop (and a request waiting for its turn) call ``drain`` and ``expire`` at the times ``next_deadline_ns`` gives.

Every message a user writes is released first, one message per release.  The only messages nobody can queue are
the IB client's own start-up requests (its sync inside ``connect``): the adapter ``charge``s them as they leave, so
the window still counts what really went out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tickguard.core.model import OrderIntent, PriorityClass
from tickguard.core.throttle import Lane, Refusal, Throttle, ThrottleLimits

# an order intent's class as a lane of the budget: cancels and modifies sit between exits and entries
LANE_OF_PRIORITY = {PriorityClass.EXIT_CRITICAL: Lane.EXIT_CRITICAL, PriorityClass.EXIT: Lane.EXIT,
                    PriorityClass.ENTRY: Lane.ENTRY, PriorityClass.WHAT_IF: Lane.WHAT_IF,
                    PriorityClass.DATA: Lane.DATA}


@dataclass(frozen=True, slots=True)
class _Pending:
    send: Callable[[], None]
    refused: Callable[[str], None] | None


class MessageBudget:
    def __init__(self, limits: ThrottleLimits, clock: Callable[[], int]) -> None:
        self.throttle = Throttle(limits, clock)
        self.charged = 0  # messages that went out without being queued (the IB client's start-up sync)
        self._draining = False
        self._holding = 0

    def send(self, key: str, lane: Lane, send: Callable[[], None], risk: tuple[Any, ...] = (),
             refused: Callable[[str], None] | None = None) -> str | None:
        """Queue ``send`` and run what the budget allows now (this, at once, when nothing more urgent waits and
        the budget has room).  Returns why it was refused (a refusable lane at its bound), else None."""
        refusal = self.throttle.offer(key, lane, _Pending(send, refused), risk)
        if refusal is not None:
            return refusal.reason
        if not self._holding:
            self.drain()
        return None

    def holding(self) -> MessageBudget:
        """``with budget.holding():`` queue without sending until the block ends, then drain: an engine step offers
        every exit it decided before the first goes, so the budget's first burst goes to the most at risk, not the
        first decided.  (A plain context manager, not a generator: it wraps every engine step.)"""
        return self

    def __enter__(self) -> None:
        self._holding += 1

    def __exit__(self, *exc: object) -> None:
        self._holding -= 1
        if not self._holding and self.throttle:
            self.drain()

    def release_exits(self) -> int:
        """Send the queued exits now, inside a hold, if the budget has room for at least half a burst; returns how
        many went.  Why: a hold keeps every exit of an engine step until its end so that a short budget goes to
        the most at risk; the engine evaluates symbols most at risk first and calls this after each symbol's
        exits are committed, so that a calm market's exit does not wait for the rest of the step (other symbols,
        timers, snapshots - milliseconds, bench/wire_to_wire.py).  With less than half a burst left (a storm),
        exits wait for the end of the hold as before: the budget's own order then decides who goes first."""
        throttle = self.throttle
        if self._draining or not throttle or 2 * throttle.room() < throttle.limits.burst:
            return 0
        return self._run(Lane.EXIT, expire=False)

    def withdraw(self, key: str) -> bool:
        """Take a queued message back unsent (the cancel of an order still queued): no budget spent."""
        return self.throttle.withdraw(key) is not None

    def drain(self) -> int:
        """Refuse what waited too long, then run what may go now, most urgent first; re-entrant calls (a send
        that queues another message) are folded into the running drain."""
        if self._draining or not self.throttle:  # re-entered, or nothing queued: nothing to refuse or send
            return 0
        return self._run(None, expire=True)

    def _run(self, upto: Lane | None, expire: bool) -> int:
        """Send what the throttle releases (of lanes up to ``upto``), until it releases nothing; re-entrant sends
        join this run.  ``expire``: first refuse what waited too long."""
        self._draining = True
        ran = 0
        try:
            if expire:
                for refusal in self.throttle.expire():
                    _refuse(refusal)
            while released := self.throttle.release(upto):
                for message in released:
                    message.payload.send()
                    ran += 1
        finally:
            self._draining = False
        return ran

    def charge(self) -> None:
        """A message left that nobody queued (it could not wait): the budget counts it as spent."""
        self.charged += 1
        self.throttle.charge(Lane.DATA)

    @property
    def spent(self) -> int:
        """Messages released or charged so far: what the broker should have received from this engine."""
        return sum(self.throttle.stats().sent.values())

    def next_deadline_ns(self) -> int | None:
        """When to drain next (in the budget's clock): a message may go, or an entry's wait runs out."""
        if not self.throttle:
            return None
        times = [t for t in (self.throttle.next_release_ns(), self.throttle.next_expiry_ns()) if t is not None]
        return min(times, default=None)


def _refuse(refusal: Refusal) -> None:
    pending = refusal.message.payload
    if isinstance(pending, _Pending) and pending.refused is not None:
        pending.refused(refusal.reason)


def order_lane(intent: OrderIntent) -> tuple[Lane, tuple[Any, ...]]:
    """An order's lane and its place in it: most at risk first - how far the price that fired it went through its
    level (relative to the level, so symbols compare), then the larger quantity."""
    trigger = intent.trigger
    through = Decimal(0)
    if trigger is not None and trigger.price is not None and trigger.level:
        through = abs(trigger.price - trigger.level) / trigger.level
    return LANE_OF_PRIORITY[intent.priority], (-through, -intent.qty)
