"""The trades' net open quantity per (account, symbol), kept as fills are applied.

Why: every reconciliation pass compares the broker's positions with what the journal's trades hold open
(``recovery.position_differences``).  Walking every trade for it touched thousands of objects the tick path had long
left out of the CPU's caches: 7 ms of the pass's hold of the event loop at 5,000 trades.  The trade manager adds
each applied entry fill and exit fill here, and each trade restored from the journal, so a pass reads a handful of
sums.  Exact (Decimal sums of exact quantities); the test compares it with the walk over every trade.
"""

from __future__ import annotations

from collections.abc import ItemsView
from decimal import Decimal

from tickguard.core.money import ZERO
from tickguard.core.trades import Trade


class OpenPositions:
    """Signed open quantity per (the request's account, "" for none; symbol)."""

    def __init__(self) -> None:
        self._net: dict[tuple[str, str], Decimal] = {}

    def add(self, trade: Trade, qty: Decimal) -> None:
        """``qty`` more of ``trade`` open (an entry fill), or less (negative: an exit fill), in its side's sign."""
        key = (trade.request.account or "", trade.request.symbol)
        self._net[key] = self._net.get(key, ZERO) + trade.sign * qty

    def items(self) -> ItemsView[tuple[str, str], Decimal]:
        return self._net.items()
