"""Demo trades for ``tickguard sim``: a seeded mix of every exit-rule kind, long and short."""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from tickguard.core.exit_rules import BreakEven, StopLoss, TakeProfit, TimeStop, TrailingStop
from tickguard.core.model import OrderType, Side
from tickguard.core.trades import TradeRequest

_TEMPLATES = [
    lambda: [StopLoss(distance=0.6), TakeProfit(fraction=0.5, distance=0.5), TakeProfit(fraction=0.5, distance=1.0)],
    lambda: [StopLoss(distance=0.8), TrailingStop(distance=0.5, activate_after=0.3), TakeProfit(distance=1.5)],
    lambda: [StopLoss(distance=0.5, unit="adr"), BreakEven(after=0.4, offset=0.0),
             TakeProfit(fraction=0.5, distance=0.8), TakeProfit(fraction=0.5, distance=1.6)],
    lambda: [StopLoss(distance=0.5), TimeStop(after_seconds=1800)],
    lambda: [TrailingStop(distance=0.4), TakeProfit(distance=1.2)],
]


def demo_trades(n: int, symbols: list[str], seed: int, users: tuple[str, ...] = ("alice", "bob")) -> list[TradeRequest]:
    rng = np.random.default_rng([seed, 0xDE70])
    out = []
    for i in range(n):
        side = Side.LONG if rng.random() < 0.5 else Side.SHORT
        rules = _TEMPLATES[i % len(_TEMPLATES)]()
        user = users[i % len(users)]
        out.append(TradeRequest(symbol=symbols[int(rng.integers(len(symbols)))], side=side,
                                qty=Decimal(100 * int(rng.integers(1, 6))), entry_type=OrderType.MARKET, rules=rules,
                                user=user, account=f"DU{1000 + users.index(user)}"))
    return out
