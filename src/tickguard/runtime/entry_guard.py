"""Whether an account may open new trades, and what decides it - the one home of the engine's flood control.

Between the order executor and the trade manager, the guard counts every refused order in the account's entry
breaker (core/entry_breaker.py; a trip is logged once, as an ERROR) and every execution, sent order, sent cancel and
order ended unfilled in the account's order-efficiency ratio of the trading day (core/order_efficiency.py).
``entry_refusal`` says why an account's new entries wait, if they do; exits are never asked."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from decimal import Decimal
from zoneinfo import ZoneInfo

from tickguard.core.entry_breaker import EntryBreaker
from tickguard.core.halts import Execution, Overfill
from tickguard.core.model import OrderIntent
from tickguard.core.order_efficiency import DayCount, EfficiencyTracker
from tickguard.core.order_state import OrderStatus
from tickguard.runtime.order_record import IntentListener

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")


def trading_day(ts_ns: int) -> str:
    """The US trading day a time belongs to (New York date), the day of IB's order-efficiency ratio."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=NEW_YORK).date().isoformat()


def describe(account: str, count: DayCount, bound: float) -> str:
    """Why an account's new entries wait, with the day's figures."""
    ratio = "-" if count.ratio is None else f"{count.ratio:.1f}"
    return (f"account {account or '(default)'}: {count.unfilled} orders ended unfilled and {count.cancels} cancels "
            f"against {count.executions} executions today ({count.wasted:.1f} per execution, above {bound:g}; "
            f"IB's order-efficiency ratio {ratio} with {count.orders} orders): new entries wait until executions "
            "bring it down")


class EntryGuard:
    """An ``IntentListener`` that forwards everything to ``inner``, counting per account as it goes."""

    def __init__(self, inner: IntentListener, breaker: EntryBreaker, efficiency: EfficiencyTracker,
                 clock: Callable[[], int], account_of: Callable[[OrderIntent], str]) -> None:
        self._inner, self._clock, self._account_of = inner, clock, account_of
        self.breaker, self.efficiency = breaker, efficiency
        self._warned: set[tuple[str, str]] = set()
        self.refused: dict[tuple[str, str], int] = {}  # (account, cause) -> new trades refused, for metrics

    def entry_refusal(self, account: str, now_ns: int) -> str | None:
        """Why ``account``'s new entries wait now (its breaker tripped, or its ratio is over the bound), or None."""
        trip = self.breaker.paused(account, now_ns)
        if trip is not None:
            return trip.describe()
        day = trading_day(now_ns)
        if self.efficiency.over(account, day):
            return describe(account, self.efficiency.days[(account, day)], self.efficiency.bound)
        return None

    def blocking(self, account: str, now_ns: int) -> list[str]:
        """What holds ``account``'s new entries now: ``breaker`` and / or ``efficiency`` (empty: nothing)."""
        causes = ["breaker"] if self.breaker.paused(account, now_ns) is not None else []
        return causes + (["efficiency"] if self.efficiency.over(account, trading_day(now_ns)) else [])

    def refuse_entry(self, account: str, now_ns: int) -> str | None:
        """``entry_refusal`` for a new trade, counted by cause when it is refused."""
        why = self.entry_refusal(account, now_ns)
        if why is not None:
            cause = self.blocking(account, now_ns)[0]
            self.refused[(account, cause)] = self.refused.get((account, cause), 0) + 1
        return why

    def sent(self, intent: OrderIntent, cancel: bool = False) -> None:
        """An order or a cancel went to the broker: counted in the ratio (a warning the first time it is over)."""
        account, day = self._account_of(intent), trading_day(self._clock())
        (self.efficiency.cancel if cancel else self.efficiency.order)(account, day)
        if self.efficiency.over(account, day) and (account, day) not in self._warned:
            self._warned.add((account, day))
            log.warning("%s", describe(account, self.efficiency.days[(account, day)], self.efficiency.bound))

    def on_fill(self, intent: OrderIntent, qty: Decimal, price: Decimal, ts_ns: int, commission: Decimal,
                execution: Execution | None = None) -> Overfill | None:
        self.efficiency.execution(self._account_of(intent), trading_day(self._clock()))
        return self._inner.on_fill(intent, qty, price, ts_ns, commission, execution)

    def on_commission(self, intent: OrderIntent, commission: Decimal) -> None:
        self._inner.on_commission(intent, commission)

    def on_intent_closed(self, intent: OrderIntent, status: OrderStatus, remaining: Decimal, reason: str) -> None:
        if remaining >= intent.qty and status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            self.efficiency.ended_unfilled(self._account_of(intent), trading_day(self._clock()))
        if status is OrderStatus.REJECTED:
            account = self._account_of(intent)
            was = self.breaker.paused(account, self._clock())
            trip = self.breaker.record(account, reason or "rejected", self._clock())
            if trip is not None and was is None:
                log.error("%s", trip.describe())
        self._inner.on_intent_closed(intent, status, remaining, reason)
