"""IB's order-efficiency ratio, per account and trading day: (orders + modifies + cancels sent) / executions.

Why: IB watches the ratio and warns, then restricts, accounts whose orders rarely execute (its guideline: above 20
for an account with enough orders in a day). tickguard holds stops and targets itself, so it sends no modifies and
most of its orders execute; the ratio rises when entries are cancelled unfilled or orders are refused and sent
again. The tracker counts what was sent and what executed; ``over`` tells a sender (the engine's entry check, a
future what-if refresher) that the account is above the bound, so discretionary traffic can wait while exits never
do.

``over`` judges the messages already *wasted* - orders that ended without an execution, and cancels - per
execution, not every order sent: a burst of market entries has sent many orders and seen no execution yet, and
would otherwise look like the worst ratio of the day a moment before it turns out the best.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(slots=True)
class DayCount:
    orders: int = 0
    cancels: int = 0
    executions: int = 0
    unfilled: int = 0  # orders that ended (cancelled, refused, expired) without any execution

    @property
    def wasted(self) -> float:
        """Wasted messages (unfilled orders and cancels) per execution (per one, before the first)."""
        return (self.unfilled + self.cancels) / max(1, self.executions)

    @property
    def ratio(self) -> float | None:
        """(orders + cancels) per execution; None before the first execution."""
        return (self.orders + self.cancels) / self.executions if self.executions else None


class EfficiencyTracker:
    def __init__(self, bound: float = 20.0, min_orders: int = 20) -> None:
        self.bound = bound
        self.min_orders = min_orders  # below this many messages a day the ratio says nothing yet
        self.days: dict[tuple[str, str], DayCount] = defaultdict(DayCount)

    def order(self, account: str, day: str) -> None:
        self.days[(account, day)].orders += 1

    def cancel(self, account: str, day: str) -> None:
        self.days[(account, day)].cancels += 1

    def execution(self, account: str, day: str) -> None:
        self.days[(account, day)].executions += 1

    def ended_unfilled(self, account: str, day: str) -> None:
        self.days[(account, day)].unfilled += 1

    def over(self, account: str, day: str) -> bool:
        """Above the bound today (wasted messages per execution), with enough messages for it to count."""
        count = self.days.get((account, day))
        if count is None or count.orders + count.cancels < self.min_orders:
            return False
        return count.wasted > self.bound

    def today(self, day: str) -> dict[str, DayCount]:
        """Every account's count for ``day``."""
        return {account: count for (account, d), count in self.days.items() if d == day}
