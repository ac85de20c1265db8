"""Between the order executor and the trade manager: every refused order is counted by the account's entry breaker
(core/entry_breaker.py) before the trade manager hears of it, and a trip is logged once, as an ERROR."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

from tickguard.core.entry_breaker import EntryBreaker
from tickguard.core.halts import Execution, Overfill
from tickguard.core.model import OrderIntent
from tickguard.core.order_state import OrderStatus
from tickguard.runtime.order_record import IntentListener

log = logging.getLogger(__name__)


class RejectionWatch:
    """An ``IntentListener`` that forwards everything to ``inner`` and counts rejections per account."""

    def __init__(self, inner: IntentListener, breaker: EntryBreaker, clock: Callable[[], int],
                 account_of: Callable[[OrderIntent], str]) -> None:
        self._inner, self._breaker, self._clock, self._account_of = inner, breaker, clock, account_of

    def on_fill(self, intent: OrderIntent, qty: Decimal, price: Decimal, ts_ns: int, commission: Decimal,
                execution: Execution | None = None) -> Overfill | None:
        return self._inner.on_fill(intent, qty, price, ts_ns, commission, execution)

    def on_commission(self, intent: OrderIntent, commission: Decimal) -> None:
        self._inner.on_commission(intent, commission)

    def on_intent_closed(self, intent: OrderIntent, status: OrderStatus, remaining: Decimal, reason: str) -> None:
        if status is OrderStatus.REJECTED:
            account = self._account_of(intent)
            was = self._breaker.paused(account, self._clock())
            trip = self._breaker.record(account, reason or "rejected", self._clock())
            if trip is not None and was is None:
                log.error("%s", trip.describe())
        self._inner.on_intent_closed(intent, status, remaining, reason)
