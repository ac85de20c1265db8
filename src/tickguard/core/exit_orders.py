"""Exit orders: how each exit is priced, and the documented policy when the broker refuses one.

Why a policy and not "try again": an exit the broker refused (after the executor's own retries for pacing and
connectivity) leaves the position unprotected, and the same order again may be refused for the same reason - a
limit the market ran away from, a price band.  So every failure of a leg makes its next order more certain to
execute, and is never the last word:

* the first order of a leg is the configured type: market, or a limit ``exit_limit_offset`` beyond the touch;
* the first retry of a configured limit is a limit priced again at the touch then;
* from the second retry on, a market order;
* retries follow a pause that doubles with each failure of the leg (``exit_retry_backoff_ms`` x 1, 2, 4 ...,
  at most x 64), so a broker that keeps refusing is not flooded, and the leg is retried for as long as the
  trade is automated (a halted trade is retried by no one);
* every failure raises an ``ExitAlert`` at once: the engine logs it at ERROR, and the trade's history and the
  journal hold the ``exit_failed`` event - a person hears of it while the engine keeps trying.

The README's "Rejected exits" says the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tickguard.core.model import OrderType, Tick
from tickguard.core.price_grid import PriceGrid

MAX_BACKOFF_FACTOR = 64


@dataclass(slots=True, frozen=True)
class ExitAlert:
    """An exit order that ended without filling what it was for, and what happens next."""

    trade_id: str
    leg: str
    key: str
    status: str
    reason: str
    remaining: Decimal
    next_type: OrderType
    retry_in_ns: int | None  # None: not retried (the trade is halted or over)
    ts_ns: int

    def describe(self) -> str:
        then = (f"retrying as a {self.next_type.name.lower()} order in {self.retry_in_ns / 1e9:g}s"
                if self.retry_in_ns is not None else "NOT retried (the trade is no longer automated)")
        return (f"EXIT REFUSED: trade {self.trade_id} leg {self.leg} ({self.key}) {self.status}"
                f"{': ' + self.reason if self.reason else ''}; {self.remaining} still to exit - {then}")


class ExitPolicy:
    """The configured exit order type and offset, and the escalation after failures (module docstring)."""

    def __init__(self, order_type: OrderType, limit_offset: Decimal, backoff_ns: int) -> None:
        self.order_type = order_type
        self.limit_offset = limit_offset
        self.backoff_ns = backoff_ns

    def type_after(self, failures: int) -> OrderType:
        """The order type of a leg's next exit after ``failures`` refusals."""
        return OrderType.MARKET if self.order_type is OrderType.MARKET or failures >= 2 else OrderType.LIMIT

    def pause_ns(self, failures: int) -> int:
        """The pause before the retry that follows the ``failures``-th refusal (failures >= 1)."""
        return self.backoff_ns * min(2 ** max(failures - 1, 0), MAX_BACKOFF_FACTOR)

    def limit(self, failures: int, touch: Tick | None, grid: PriceGrid, sign: int) -> Decimal | None:
        """The limit of a limit exit (None: send it at market - a market order by policy, or no quote to price
        a limit from).  The offset applies to the first order only; a retry is priced at the touch."""
        if self.type_after(failures) is OrderType.MARKET or touch is None:
            return None
        offset = self.limit_offset if failures == 0 else Decimal(0)
        base = touch.bid if sign > 0 else touch.ask  # snapped away from the touch: a sell down, a buy up
        # an offset larger than the price (a cheap stock) must not make a sell limit of zero or less: one tick
        return grid.price(max(grid.marketable_limit(base, offset, buy=sign < 0), 2))
