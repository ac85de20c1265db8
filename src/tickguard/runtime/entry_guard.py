"""Between the order executor and the trade manager: every refused order is counted by the account's entry breaker
(core/entry_breaker.py) before the trade manager hears of it, and a trip is logged once, as an ERROR; every
execution, sent order and sent cancel is counted in the account's order-efficiency ratio of the trading day
(core/order_efficiency.py)."""

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


def describe(count: DayCount, bound: float) -> str:
    """Why an account's new entries wait, with the day's figures."""
    return (f"{count.unfilled} orders ended unfilled and {count.cancels} cancels against {count.executions} "
            f"executions today ({count.wasted:.1f} per execution, above {bound:g}; IB's order-efficiency ratio "
            f"{'-' if count.ratio is None else f'{count.ratio:.1f}'} with {count.orders} orders): new entries "
            "wait until executions bring it down")


class RejectionWatch:
    """An ``IntentListener`` that forwards everything to ``inner`` and counts rejections per account."""

    def __init__(self, inner: IntentListener, breaker: EntryBreaker, efficiency: EfficiencyTracker,
                 clock: Callable[[], int], account_of: Callable[[OrderIntent], str]) -> None:
        self._inner, self._breaker, self._clock, self._account_of = inner, breaker, clock, account_of
        self.efficiency = efficiency
        self._warned: set[tuple[str, str]] = set()

    def sent(self, intent: OrderIntent, cancel: bool = False) -> None:
        """An order or a cancel went to the broker: counted in the ratio (a warning the first time it is over)."""
        account, day = self._account_of(intent), trading_day(self._clock())
        (self.efficiency.cancel if cancel else self.efficiency.order)(account, day)
        if self.efficiency.over(account, day) and (account, day) not in self._warned:
            self._warned.add((account, day))
            count = self.efficiency.days[(account, day)]
            log.warning("account %s: %s", account or "(default)", describe(count, self.efficiency.bound))

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
            was = self._breaker.paused(account, self._clock())
            trip = self._breaker.record(account, reason or "rejected", self._clock())
            if trip is not None and was is None:
                log.error("%s", trip.describe())
        self._inner.on_intent_closed(intent, status, remaining, reason)
