"""Batch mode against per-tick mode with the real trade manager: same legs, same ticks, any chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tickguard.core.exit_rules import BreakEven, StopLoss, TakeProfit, TrailingStop
from tickguard.core.model import OrderIntent, OrderType, PriorityClass, Side, Tick
from tickguard.core.price_grid import CENT
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot

SYMBOLS = ("AAA", "BBB")
T0 = 1_000_000_000_000


def tk(sym: str, bid: float, ask: float, ts: int, recv: int, seq: int) -> Tick:
    """A quote-only tick as the adapter makes it: prices on the 0.01 grid, in units."""
    return Tick(sym, CENT.units(bid), CENT.units(ask), 0, 1.0, ts, recv, seq)


def rules_for(kind: int) -> list:
    return [
        [StopLoss(distance=1.0), TakeProfit(fraction=0.5, distance=1.0), TakeProfit(fraction=0.5, distance=2.0)],
        [TrailingStop(distance=0.5)],
        [StopLoss(distance=2.0), TrailingStop(distance=0.7, activate_after=0.5), TakeProfit(distance=3.0)],
        [StopLoss(distance=1.0), BreakEven(after=0.6, offset=0.1), TakeProfit(distance=2.5)],
        [StopLoss(price=99.0 if True else 0), TakeProfit(price=101.5)],
    ][kind]


def build(mode: str, trades: list[tuple[str, int, int]]):
    now = [T0]
    quotes: dict[str, Tick] = {s: tk(s, 100.0, 100.02, T0, T0, 0) for s in SYMBOLS}
    vol = {s: VolSnapshot(s, 1.0, 1.5, T0) for s in SYMBOLS}
    # limit exits priced off the last quote: batch mode must price them off the same tick as per-tick mode
    tm = TradeManager(lambda: now[0], vol.get, quotes.get, exit_order_type=OrderType.LIMIT, exit_limit_offset=0.05)
    sent: list[tuple] = []
    for sym, side, kind in trades:
        s = Side.LONG if side else Side.SHORT
        rules = rules_for(kind)
        if kind == 4 and s is Side.SHORT:
            rules = [StopLoss(price=101.0), TakeProfit(price=98.5)]
        tr = tm.submit(TradeRequest(symbol=sym, side=s, qty=100, rules=rules))
        entry = tm.outbox.pop()
        tm.on_fill(OrderIntent(entry.key, tr.id, "entry", "u", "a", sym, entry.action, 100, entry.order_type, None,
                               PriorityClass.ENTRY, 0), 100, 100.0, T0, 0.0)

    def take():
        for i in tm.outbox:
            sent.append((i.key, i.qty, i.trigger.rule, i.trigger.tick_seq, i.limit_price))
        tm.outbox.clear()

    handler = TickHandler(tm, mode=mode, after_symbol=take)
    handler.seed_quotes(quotes)
    tm.read_quotes_from(handler.quote)
    return handler, sent


moves = st.lists(
    st.tuples(st.sampled_from(SYMBOLS), st.sampled_from([-1, 1]) | st.just(0),
              st.integers(1, 40), st.booleans()),  # symbol, direction, size in cents, gap
    min_size=1, max_size=120,
)


@settings(max_examples=1500, deadline=None)
@given(
    trades=st.lists(st.tuples(st.sampled_from(SYMBOLS), st.integers(0, 1), st.integers(0, 4)), min_size=1, max_size=8),
    path=moves,
    cuts=st.lists(st.integers(1, 80), min_size=1, max_size=20),
)
def test_batched_fires_exactly_what_per_tick_fires(trades, path, cuts):
    mids = {s: 100.01 for s in SYMBOLS}
    ticks = []
    for seq, (sym, direction, cents, gap) in enumerate(path, start=1):
        mids[sym] = max(1.0, mids[sym] + direction * cents * (0.25 if gap else 0.01))
        bid = round(mids[sym] - 0.01, 2)
        ticks.append(tk(sym, bid, round(bid + 0.02, 2), T0 + seq, T0 + seq * 1_000_000, seq))
    per_tick, want = build("per_tick", trades)
    for tick in ticks:
        per_tick.process([tick])
    batched, got = build("batch", trades)
    i = 0
    for n in cuts * 10:  # random chunk boundaries
        if i >= len(ticks):
            break
        batched.process(ticks[i:i + n])
        i += n
    batched.process(ticks[i:])
    assert sorted(got) == sorted(want)
    assert len({k for k, *_ in got}) == len(got)  # no key twice


def test_priority_most_endangered_symbol_first():
    handler, sent = build("batch", [("AAA", 1, 0), ("BBB", 1, 0)])  # long stops at 99.00 on both
    # one chunk: AAA barely touches its stop, BBB gaps far through it; BBB arrived later but goes first
    chunk = [tk("AAA", 99.0, 99.02, T0 + 1, T0 + 1, 1), tk("BBB", 97.0, 97.02, T0 + 2, T0 + 2, 2)]
    handler.process(chunk)
    assert [k.split(":")[1] for k, *_ in sent] == ["T00002", "T00001"]


def test_window_splits_a_long_chunk_by_arrival_time():
    handler, _ = build("batch", [("AAA", 1, 0)])
    handler.window_ns = 10
    chunk = [tk("AAA", 100.0 + i * 0.01, 100.02 + i * 0.01, T0 + i, T0 + i * 5, i) for i in range(1, 9)]
    handler.process(chunk)
    assert handler.stats.batches == 3  # arrivals at 5, 10 ... 40 ns in 10 ns windows: 3 + 3 + 2
    assert (handler.stats.max_size, handler.stats.last_size) == (3, 2)
    assert handler.stats.last_backlog == 0 and handler.stats.ticks == 8


def test_quiet_ticks_are_not_evaluated_and_memory_is_per_symbol():
    handler, _ = build("batch", [("AAA", 1, 0), ("BBB", 0, 0)])
    quiet = [tk(SYMBOLS[i % 2], 100.0 + (i % 3) * 0.01, 100.04 + (i % 3) * 0.01, T0 + i, T0 + i, i)
             for i in range(1, 20_001)]
    handler.process(quiet)
    assert handler.stats.evaluated == 0 and handler.counters.accepted == 20_000
    assert len(handler.last_quote) == 2 and len(handler._states) == 2
