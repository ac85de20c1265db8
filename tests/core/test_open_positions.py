"""The trade manager's open positions per (account, symbol) (core/open_positions.py) are kept as fills are applied:
after any mix of entry fills, exits, over-fills refused and a restore from snapshots, they equal the walk over every
trade that reconciliation used to make - the figure it compares with the broker's positions."""

import random
from collections import defaultdict
from decimal import Decimal

from tickguard.core.exit_rules import StopLoss
from tickguard.core.halts import Execution
from tickguard.core.model import Side
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot

D = Decimal


def walked(tm: TradeManager) -> dict[tuple[str, str], Decimal]:
    """What every trade holds open, summed: the reference (zero sums dropped - they hold nothing)."""
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for t in tm.trades.values():
        out[(t.request.account or "", t.symbol)] += t.sign * (t.entry_filled - t.exited)
    return {k: v for k, v in out.items() if v}


def kept(tm: TradeManager) -> dict[tuple[str, str], Decimal]:
    return {k: v for k, v in tm.positions.items() if v}


def test_kept_positions_equal_the_walk_over_every_trade_through_fills_exits_overfills_and_a_restore(clock, market):
    rng = random.Random(11)
    market.vol["BBB"] = VolSnapshot("BBB", 2.0, 3.0, clock())
    for sym in ("AAA", "BBB"):
        market.tick(sym, 100.0, 100.02)
    tm = TradeManager(clock, market.vol.get, market.quotes.get)
    handler = TickHandler(tm)
    entries = []
    for i in range(24):
        side = Side.LONG if i % 3 else Side.SHORT
        trade = tm.submit(TradeRequest(symbol="AAA" if i % 2 else "BBB", side=side, qty=10 + i,
                                       account=[None, "DU1", "DU2"][i % 3], rules=[StopLoss(distance=1.0)]))
        [entry] = tm.outbox
        tm.outbox.clear()
        entries.append((trade, entry))
    for _trade, entry in entries:  # entries filled in parts, some not at all, one over-filled (refused: halted)
        left = entry.qty
        while left > 0 and rng.random() < 0.8:
            part = min(left, D(rng.randint(1, 12)))
            tm.on_fill(entry, part, D(100), clock(), D(0))
            left -= part
    _over, over_entry = entries[5]
    tm.on_fill(over_entry, D(1), D(100), clock(), D(0), Execution("x", over_entry.qty + 1, D(0), over_entry.qty + 1))
    assert kept(tm) == walked(tm) != {}
    for sym in ("AAA", "BBB"):  # every stop fires both ways; its exits fill in parts
        handler.process([market.tick(sym, 90.0, 90.02)])
        handler.process([market.tick(sym, 110.0, 110.02)])
    exits, tm.outbox = tm.outbox, []
    assert exits
    for intent in exits:
        tm.on_fill(intent, intent.qty - (intent.qty // 3 if rng.random() < 0.5 else 0), D(95), clock(), D(0))
    assert kept(tm) == walked(tm)
    assert any(t.exited for t in tm.trades.values()) and any(t.entry_filled > t.exited for t in tm.trades.values())

    restored = TradeManager(clock, market.vol.get, market.quotes.get)
    for t in tm.trades.values():
        restored.restore(t.id, t.request, tm.snapshot(t), t.created_ns)
    assert kept(restored) == walked(restored) == walked(tm)
