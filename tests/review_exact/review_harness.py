"""Reviewer's harness: drive TradeManager + TickHandler with prices written as decimals.

Written for the review; uses the project's public core API only."""

from __future__ import annotations

from decimal import Decimal

from tickguard.core.model import OrderIntent, PriorityClass, Side, Tick
from tickguard.core.price_grid import PriceGrid
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot

T0 = 1_000_000_000_000


class Rig:
    """One symbol "X"; events are applied in order; fires are (trade index, leg) -> first tick seq."""

    def __init__(self, tick: str, first_quote: tuple[str, str], atr: float, mode: str = "per_tick", **tm_kw):
        self.grid = PriceGrid(tick)
        self.mode = mode
        self.vol = {"X": VolSnapshot("X", atr, atr, T0)}
        b, a = (self.grid.exact_units(Decimal(p)) for p in first_quote)
        self.quotes = {"X": Tick("X", b, a, 0, 1.0, T0, T0, 0)}
        self.now = T0
        self.tm = TradeManager(lambda: self.now, self.vol.get, self.quotes.get, grid=lambda _s: self.grid, **tm_kw)
        self.handler = TickHandler(self.tm, mode=mode, after_symbol=self._take)
        self.handler.seed_quotes(self.quotes)
        self.tm.read_quotes_from(self.handler.quote)
        self.trades = []
        self.entries = []
        self.fired: dict[tuple[int, str], int] = {}
        self.intents: list[OrderIntent] = []
        self.seq = 0
        self.pending: list[Tick] = []

    def _take(self) -> None:
        for intent in self.tm.outbox:
            if intent.leg == "entry":
                continue
            self.intents.append(intent)
            idx = next(i for i, t in enumerate(self.trades) if t.id == intent.trade_id)
            self.fired.setdefault((idx, intent.leg), intent.trigger.tick_seq if intent.trigger else -1)
        self.tm.outbox[:] = [i for i in self.tm.outbox if i.leg == "entry"]

    def submit(self, side: str, qty: int, rules: list) -> int:
        self.flush()
        trade = self.tm.submit(TradeRequest(symbol="X", side=Side(side), qty=Decimal(qty), rules=rules))
        self.entries.append(self.tm.outbox.pop())
        self.trades.append(trade)
        return len(self.trades) - 1

    def fill(self, idx: int, qty: int, price: str) -> None:
        self.flush()
        e = self.entries[idx]
        self.tm.on_fill(OrderIntent(e.key, e.trade_id, "entry", "u", "a", "X", e.action, e.qty, e.order_type, None,
                                    PriorityClass.ENTRY, 0), Decimal(qty), Decimal(price), self.now, Decimal(0))
        self._take()

    def set_vol(self, atr: float) -> None:
        self.flush()
        snap = VolSnapshot("X", atr, atr, self.now)
        self.vol["X"] = snap
        self.tm.on_volatility(snap)
        self._take()

    def tick(self, bid: str, ask: str, last: str | None = None) -> int:
        """Queue a tick (prices as decimal text on the grid); per_tick: processed now. Returns its seq."""
        self.seq += 1
        self.now += 1000
        g = self.grid
        t = Tick("X", g.exact_units(Decimal(bid)), g.exact_units(Decimal(ask)),
                 0 if last is None else g.exact_units(Decimal(last)), 1.0, self.now, self.now, self.seq)
        if self.mode == "per_tick":
            self.handler.process([t])
        else:
            self.pending.append(t)
        return self.seq

    def flush(self) -> None:
        if self.pending:
            ticks, self.pending = self.pending, []
            self.handler.process(ticks)

    def result(self) -> dict[tuple[int, str], int]:
        self.flush()
        return dict(self.fired)
