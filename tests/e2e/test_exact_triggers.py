"""Every trigger decided exactly: the engine's fires equal the exact reference's, tick by tick.

Hypothesis builds price paths that move a few ticks at a time on grids of 0.01, 0.05, 0.25, 0.0001 and 0.00005,
from prices of 0.30 to 600000.00, with rule distances of a few (fractional) ticks: so paths land exactly on
stop, target, trailing and break-even levels all the time, for every trigger source (bid, ask, last, mid with
half-tick mids, auto), long and short, with the stop moving in between.  The engine (trade manager + tick
handler, per-tick and batch) must fire each leg on exactly the tick the reference (``replay_reference``:
Decimal / Fraction arithmetic, written without the engine's code) says.  A float level (169.37 + 0.02), a
rounding the other way or a halved mid fails it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st
from replay_reference import first_exits, valid_ticks

from tickguard.core.exit_rules import BreakEven, StopLoss, TakeProfit, TrailingStop
from tickguard.core.model import OrderIntent, PriorityClass, Side, Tick
from tickguard.core.price_grid import PriceGrid
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_checks import TradeRejected
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot

T0 = 1_000_000_000_000
GRIDS = [("0.01", "169.37"), ("0.01", "0.30"), ("0.05", "100.10"), ("0.25", "4500.25"), ("0.0001", "1.2345"),
         ("0.00005", "1.23455"), ("0.01", "600000.00")]
SOURCES = ["auto", "bid", "ask", "last", "mid"]

# distances in ticks, whole or not (0.5 ticks floors to the minimum of one), as multiples of the tick
ticks_away = st.sampled_from([0.5, 1, 1.5, 2, 2.9, 3, 4, 5.5, 7])


@st.composite
def trades(draw):
    tick_text, entry_text = draw(st.sampled_from(GRIDS))
    tick = Decimal(tick_text)
    side = draw(st.sampled_from(["long", "short"]))
    atr_ticks = draw(st.sampled_from([1, 2, 2.5, 3.7]))
    atr = float(tick * Decimal(str(atr_ticks)))
    unit = draw(st.sampled_from(["price", "atr"]))

    def dist(n: float) -> float:  # n ticks, in the rule's unit
        return float(tick * Decimal(str(n))) if unit == "price" else n / atr_ticks

    stop_src = draw(st.sampled_from(SOURCES))
    rules: list = []
    kind = draw(st.sampled_from(["stop", "fixed_stop", "trail", "trail_act", "none"]))
    s = 1 if side == "long" else -1
    if kind == "stop":
        rules.append(StopLoss(distance=dist(draw(ticks_away)), unit=unit, trigger=stop_src))
    elif kind == "fixed_stop":
        k = draw(st.integers(1, 6))
        rules.append(StopLoss(price=float(Decimal(entry_text) - s * k * tick), trigger=stop_src))
    elif kind in ("trail", "trail_act"):
        act = dist(draw(st.sampled_from([0, 1, 2, 2.5]))) if kind == "trail_act" else None
        rules.append(TrailingStop(distance=dist(draw(ticks_away)), unit=unit, activate_after=act, trigger=stop_src))
    if rules and draw(st.booleans()):
        offset = float(tick * draw(st.sampled_from([-1, 0, 1, Decimal("0.5")])))
        after = dist(draw(st.sampled_from([1, 2, 3.5])))
        if unit == "atr" or offset < after:
            rules.append(BreakEven(after=after, unit=unit, offset=offset))
    n_targets = draw(st.integers(0 if rules else 1, 2))
    for i in range(n_targets):
        fraction = Decimal(1) if n_targets == 1 else Decimal("0.5")
        if draw(st.booleans()):
            rules.append(TakeProfit(fraction=fraction, distance=dist(draw(ticks_away)), unit=unit,
                                    trigger=draw(st.sampled_from(SOURCES))))
        else:
            k = draw(st.integers(1, 6)) + i
            rules.append(TakeProfit(fraction=fraction, price=float(Decimal(entry_text) + s * k * tick),
                                    trigger=draw(st.sampled_from(SOURCES))))
    # a second entry fill a few ticks away makes the average entry fall between ticks (or not)
    second = draw(st.sampled_from([None, -3, -1, 1, 2]))
    return tick_text, entry_text, side, atr, rules, second


@st.composite
def paths(draw):
    """(bid move in ticks, spread in ticks, last: none / at bid / at ask / a tick above the bid) per step."""
    return draw(st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 3), st.sampled_from([None, 0, 1, 2])),
                         min_size=1, max_size=40))


def entry_fills(entry: Decimal, tick: Decimal, second: int | None) -> list[tuple[Decimal, Decimal]]:
    """(qty, price) of the entry's fills: 100 at the entry, and maybe 50 more ``second`` ticks away."""
    return [(Decimal(100), entry)] + ([] if second is None else [(Decimal(50), entry + second * tick)])


def engine_fires(mode: str, grid: PriceGrid, side: str, entry: Decimal, atr: float, rules: list,
                 ticks: list[Tick], second: int | None = None) -> dict[str, tuple[str, int]]:
    vol = {"X": VolSnapshot("X", atr, atr, T0)}
    e = grid.exact_units(entry)
    quotes = {"X": Tick("X", e, e, 0, 1.0, T0, T0, 0)}
    tm = TradeManager(lambda: T0, vol.get, quotes.get, grid=lambda _s: grid)
    fired: dict[str, tuple[str, int]] = {}

    def take() -> None:
        for intent in tm.outbox:
            assert intent.trigger is not None
            fired.setdefault(intent.leg, ("tick", intent.trigger.tick_seq))
        tm.outbox.clear()

    fills = entry_fills(entry, grid.tick, second)
    qty = sum(q for q, _ in fills)
    trade = tm.submit(TradeRequest(symbol="X", side=Side(side), qty=qty, rules=rules))
    entry_intent = tm.outbox.pop()
    for fill_qty, price in fills:
        tm.on_fill(OrderIntent(entry_intent.key, trade.id, "entry", "u", "a", "X", entry_intent.action, qty,
                               entry_intent.order_type, None, PriorityClass.ENTRY, 0), fill_qty, price, T0, Decimal(0))
    handler = TickHandler(tm, mode=mode, after_symbol=take)
    handler.seed_quotes(quotes)
    tm.read_quotes_from(handler.quote)
    if mode == "batch":
        handler.process(ticks)
    else:
        for tick in ticks:
            handler.process([tick])
    return fired


def build_ticks(grid: PriceGrid, entry: Decimal, path: list) -> tuple[list[Tick], list[list]]:
    bid = grid.exact_units(entry)
    ticks, rows = [], []
    for seq, (move, spread, last) in enumerate(path, start=1):
        bid = max(2, bid + 2 * move)
        ask = bid + 2 * spread
        last_units = 0 if last is None else (bid, ask, bid + 2)[last]
        ts = T0 + seq
        ticks.append(Tick("X", bid, ask, last_units, 1.0, ts, ts, seq))
        rows.append([seq, "X", ts, str(grid.price(bid)), str(grid.price(ask)),
                     str(grid.price(last_units)) if last_units else None])
    return ticks, rows


@settings(max_examples=1500, deadline=None)
@given(trade=trades(), path=paths())
@example(  # the issue's case: a short trailing level of 169.37 + 0.02, touched by an ask of exactly 169.39
    trade=("0.01", "169.37", "short", 0.01, [TrailingStop(distance=0.02, unit="price")], None),
    path=[(0, 0, None), (1, 0, None), (1, 0, None)])
@example(  # a level of 0.1 + 0.2: a short target from 0.30 at 0.10 touched exactly
    trade=("0.01", "0.30", "short", 0.01, [TakeProfit(distance=0.2, unit="price")], None), path=[(-10, 0, None)] * 2)
@example(  # a mid trailing from a half-tick best (169.375): its level 169.365 goes up to 169.37, tighter
    trade=("0.01", "169.37", "long", 0.01, [TrailingStop(distance=0.01, unit="price", trigger="mid")], None),
    path=[(0, 1, None), (-1, 1, None)])
@example(  # an average entry between ticks (100 at 169.37, 50 at 169.38): the stop rounds tighter
    trade=("0.01", "169.37", "long", 0.01, [StopLoss(distance=0.02, unit="price")], 1),
    path=[(-1, 0, None), (-1, 0, None), (-1, 0, None)])
def test_engine_fires_where_the_exact_reference_does(trade, path):
    tick_text, entry_text, side, atr, rules, second = trade
    grid, entry = PriceGrid(tick_text), Decimal(entry_text)
    ticks, rows = build_ticks(grid, entry, path)
    fills = [{"qty": str(q), "price": str(p), "ts_ns": T0} for q, p in entry_fills(entry, grid.tick, second)]
    qty = str(sum(Decimal(f["qty"]) for f in fills))
    want = first_exits({"side": side, "qty": qty, "rules": [r.model_dump(mode="json") for r in rules]},
                       fills, valid_ticks(rows)["X"], {"atr": atr, "adr": atr}, tick_size=Decimal(tick_text))
    for mode in ("per_tick", "batch"):
        try:
            got = engine_fires(mode, grid, side, entry, atr, rules, ticks, second)
        except TradeRejected as exc:  # a break-even that would fire the moment it arms is refused at submit
            assert "break_even offset" in str(exc)
            reject()
        assert got == want, mode


def test_the_issues_trailing_case_fires_on_the_touch_not_a_tick_later():
    grid = PriceGrid("0.01")
    ticks, _ = build_ticks(grid, Decimal("169.37"), [(0, 0, None), (1, 0, None), (1, 0, None)])
    fired = engine_fires("per_tick", grid, "short", Decimal("169.37"), 0.01,
                         [TrailingStop(distance=0.02, unit="price")], ticks)
    assert fired == {"stop": ("tick", 3)}  # ask 169.39 on the third tick is the level exactly


@pytest.mark.parametrize("bid_ask", [("100.30", "100.31")])
def test_a_half_tick_mid_is_compared_exactly(bid_ask):
    grid = PriceGrid("0.01")
    entry = Decimal("100.40")
    stop = StopLoss(price=100.30, trigger="mid")  # mid 100.305 is above it: holds; mid 100.30 fires
    bid, ask = (grid.exact_units(Decimal(p)) for p in bid_ask)
    ticks = [Tick("X", bid, ask, 0, 1.0, T0 + 1, T0 + 1, 1), Tick("X", bid - 2, ask - 2, 0, 1.0, T0 + 2, T0 + 2, 2),
             Tick("X", bid, bid, 0, 1.0, T0 + 3, T0 + 3, 3)]
    assert engine_fires("per_tick", grid, "long", entry, 0.01, [stop], ticks) == {"stop": ("tick", 2)}
    ticks[1] = Tick("X", bid, ask, 0, 1.0, T0 + 2, T0 + 2, 2)
    assert engine_fires("per_tick", grid, "long", entry, 0.01, [stop], ticks) == {"stop": ("tick", 3)}
