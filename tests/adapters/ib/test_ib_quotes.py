"""Quote assembly (adapters/ib/quotes.py): ib_async's per-read ``ticker.ticks`` replayed into engine Ticks.

Fed with ib_async's own ``TickData`` tuples, as ``Wrapper.priceSizeTick`` / ``tickSize`` append them (a bid or
ask with size 0 arrives with ib_async's empty price -1).  The same code through the real client and the fake
gateway is tested in test_ib_client.py (the burst tests).
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from ib_async.objects import TickData

from tickguard.adapters.ib.quotes import UNSET_DOUBLE, QuoteAssembler, ib_price, time_ns
from tickguard.core.price_grid import CENT, PriceGrid

NAN = math.nan
T = dt.datetime(2025, 1, 6, 14, 30, 0, 123456, tzinfo=dt.UTC)
T_NS = 1_736_173_800_123_456_000
RECV = T_NS + 5_000


def p(units: int) -> float:
    """A Tick's price back as the float IB sent (NaN for no price): the units are the nearest 0.01 tick."""
    return float(CENT.price(units)) if units else NAN


def td(tick_type: int, price: float, size: float = 100.0, when: dt.datetime | None = T) -> TickData:
    return TickData(when, tick_type, price, size)  # type: ignore[arg-type]


def read(q: QuoteAssembler, ticks: list[TickData], bid: float = NAN, ask: float = NAN, emit: bool = True,
         symbol: str = "AAA") -> list[tuple[float, float, float]]:
    """One read; returns (bid, ask, last) of each Tick emitted."""
    out = q.assemble(symbol, ticks, bid, ask, T, RECV, emit)
    return [(p(t.bid), p(t.ask), p(t.last)) for t in out]


def same(a: list[tuple[float, ...]], b: list[tuple[float, ...]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(u == v or (u != u and v != v) for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True))


def test_every_change_of_a_read_is_a_tick_in_arrival_order_with_its_own_seq():
    q = QuoteAssembler()
    q.reset("AAA")
    ticks = [td(1, 100.0), td(2, 100.02), td(1, 98.5), td(2, 98.52), td(2, 100.03), td(1, 100.01)]
    out = q.assemble("AAA", ticks, 100.01, 100.03, T, RECV)
    assert [(p(t.bid), p(t.ask)) for t in out] == [(100.0, 100.02), (98.5, 100.02), (98.5, 98.52), (98.5, 100.03),
                                             (100.01, 100.03)]  # the first bid alone is not a quote yet
    assert [t.seq for t in out] == [1, 2, 3, 4, 5]
    assert {t.ts_ns for t in out} == {T_NS} and {t.recv_ns for t in out} == {RECV}  # TickData time, exact ns
    assert all(t.symbol == "AAA" and math.isnan(p(t.last)) for t in out)


def test_last_trades_and_their_size():
    q = QuoteAssembler()
    ticks = [td(1, 10.0), td(2, 10.1), td(4, 10.05, 300), td(5, 0, 500), td(4, 10.05, 200), td(4, 10.08, 1)]
    out = q.assemble("AAA", ticks, NAN, NAN, T, RECV)
    assert same([(p(t.bid), p(t.ask), p(t.last)) for t in out],
                [(10.0, 10.1, NAN), (10.0, 10.1, 10.05), (10.0, 10.1, 10.08)])  # a repeated price is no change
    assert [t.size for t in out] == [0.0, 300.0, 1.0]  # the size of the last trade


def test_delayed_tick_types_count_like_live_ones():
    assert same(read(QuoteAssembler(), [td(66, 5.0), td(67, 5.1), td(68, 5.05)]),
                [(5.0, 5.1, NAN), (5.0, 5.1, 5.05)])


@pytest.mark.parametrize("marker", [-1.0, 0.0, NAN, UNSET_DOUBLE, math.inf])
def test_no_price_markers_never_become_a_price(marker):
    q = QuoteAssembler()
    assert read(q, [td(1, marker, 0), td(2, 10.1)]) == []  # no bid: nothing to emit
    assert same(read(q, [td(1, 10.0), td(2, marker, 0)]), [(10.0, 10.1, NAN)])  # then the ask goes away
    assert same(read(q, [td(2, 10.2)]), [(10.0, 10.2, NAN)])
    assert read(q, [td(1, marker, 0), td(2, 10.3)]) == []  # a side that goes away is unknown, not stale
    assert read(q, [td(4, marker, 0)]) == []


def test_size_only_ticks_change_no_price_but_a_zero_size_empties_its_side():
    q = QuoteAssembler()
    assert same(read(q, [td(1, 10.0), td(2, 10.1)]), [(10.0, 10.1, NAN)])
    assert read(q, [td(0, 10.0, 300), td(3, 10.1, 200), td(8, NAN, 5000), td(5, 10.0, 7)]) == []
    assert read(q, [td(0, -1.0, 0)]) == []  # ib_async's tickSize: bid size 0 -> no bid
    assert read(q, [td(2, 10.2)]) == []
    assert same(read(q, [td(1, 10.05)]), [(10.05, 10.2, NAN)])
    assert same(read(q, [td(69, -1.0, 0), td(1, 10.06)]), [(10.06, 10.2, NAN)])  # delayed bid size 0, a bid
    assert read(q, [td(70, -1.0, 0), td(1, 10.07)]) == []


def test_an_unchanged_price_is_not_a_tick():
    q = QuoteAssembler()
    read(q, [td(1, 10.0), td(2, 10.1)])
    assert read(q, [td(1, 10.0, 500), td(2, 10.1, 700)]) == []


def test_a_read_without_quote_ticks_falls_back_to_the_tickers_bid_ask_once():
    q = QuoteAssembler()
    q.reset("AAA")
    assert same(read(q, [], 10.0, 10.1), [(10.0, 10.1, NAN)])  # e.g. a snapshot: the ticker moved, no ticks
    assert read(q, [], 10.0, 10.1) == []  # the same quote again is not emitted twice
    assert read(q, [td(45, 0, 0)], 10.0, 10.1) == []  # a read of other ticks for this ticker
    assert same(read(q, [td(4, 10.05)], 10.0, 10.1), [(10.0, 10.1, 10.05)])  # a trade, the quote unchanged
    assert read(q, [], -1.0, 10.3) == []  # a ticker without a bid is no quote
    assert same(read(q, [], 10.2, 10.3), [(10.2, 10.3, 10.05)])


def test_fallback_never_duplicates_a_replayed_quote():
    q = QuoteAssembler()
    out = read(q, [td(1, 10.0), td(2, 10.1)], 10.0, 10.1)
    assert same(out, [(10.0, 10.1, NAN)])
    assert read(q, [], 10.0, 10.1) == []


def test_a_new_subscription_forgets_the_old_quote_and_ignores_the_tickers_old_values():
    q = QuoteAssembler()
    read(q, [td(1, 10.0), td(2, 10.1)], 10.0, 10.1)
    q.reset("AAA", 10.0, 10.1)  # ib_async reuses the contract's ticker, with its old bid/ask
    assert not q.known("AAA")
    assert read(q, [], 10.0, 10.1) == []  # e.g. the marketDataType read: the old values are not a new quote
    assert read(q, [td(2, 10.4)], 10.0, 10.4) == []  # one side of the new subscription is not a quote
    assert same(read(q, [td(1, 10.3)], 10.3, 10.4), [(10.3, 10.4, NAN)])


def test_not_emitting_still_follows_the_quote():
    q = QuoteAssembler()
    read(q, [td(1, 10.0), td(2, 10.1)])
    assert read(q, [td(1, 9.0), td(2, 9.1)], emit=False) == []  # e.g. while the feed is not trusted (1100)
    assert same(read(q, [td(2, 9.2)]), [(9.0, 9.2, NAN)])  # the bid is the current one, not the stale 10.0
    assert q.seq == 2


def test_symbols_are_independent():
    q = QuoteAssembler()
    assert read(q, [td(1, 10.0)], symbol="AAA") == []
    assert read(q, [td(2, 20.1)], symbol="BBB") == []
    assert q.quote("AAA")[0] == 10.0 and math.isnan(q.quote("BBB")[0])


def test_each_tick_carries_its_own_time_though_a_read_converts_a_shared_one_once():
    """ib_async stamps a read's ticks with one datetime; the assembler converts it once (a memo by identity and
    arrival time) - never handing a tick another read's time, another datetime's, or another arrival's default."""
    q = QuoteAssembler()
    later = T + dt.timedelta(microseconds=7)
    out = q.assemble("AAA", [td(1, 10.0), td(2, 10.02), td(1, 10.01, when=later)], NAN, NAN, T, RECV)
    out += q.assemble("BBB", [td(1, 20.0), td(2, 20.02)], NAN, NAN, T, RECV)  # the same read, another symbol
    assert [t.ts_ns for t in out] == [T_NS, T_NS + 7_000, T_NS]
    naive = dt.datetime(2025, 1, 6, 14, 30)  # no time zone: the arrival time stands in, per read
    for recv in (RECV + 1, RECV + 2):
        ticks = q.assemble("AAA", [td(1, 9.0 + (recv - RECV) / 100, when=naive)], NAN, NAN, naive, recv)
        assert [t.ts_ns for t in ticks] == [recv]
    for recv in (RECV + 3, RECV + 4):
        ticks = q.assemble("AAA", [td(2, 11.0 + (recv - RECV) / 100, when=None)], NAN, NAN, None, recv)
        assert [t.ts_ns for t in ticks] == [recv]


def test_prices_and_times():
    assert math.isnan(ib_price(None)) and math.isnan(ib_price(-1)) and math.isnan(ib_price(UNSET_DOUBLE))
    assert ib_price(12.5) == 12.5
    assert time_ns(T, 7) == T_NS
    assert time_ns(None, 7) == 7 and time_ns(dt.datetime.min, 7) == 7  # ib_async's lastTime before any read


@pytest.mark.parametrize(("feed", "tick", "units"), [(169.39000000000001, "0.01", 33878),
                                                    (169.38999999999999, "0.01", 33878),
                                                    (1.23456, "0.00005", 49382), (600000.0, "0.01", 120000000)])
def test_prices_land_on_the_symbols_grid_once_here(feed, tick, units):
    q = QuoteAssembler()
    q.reset("AAA", grid=PriceGrid(tick))
    [out] = q.assemble("AAA", [td(1, feed), td(2, feed)], NAN, NAN, T, RECV)
    assert (out.bid, out.ask, out.last) == (units, units, 0)
