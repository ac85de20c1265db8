import numpy as np

from tickguard.adapters.sim.market import (
    NS,
    MarketParams,
    PricePath,
    SymbolSpec,
    daily_history,
    next_open,
    quote,
    session_bounds,
)
from tickguard.core.volatility import wilder_atr

START = 1_763_908_200 * NS  # 2026-11-23 09:30 New York
SPEC = SymbolSpec("X", 1, 100.0, 0.02)


def run(seed, seconds, params=None):
    path = PricePath(SPEC, params or MarketParams(), START, np.random.default_rng(seed))
    out = []
    while path.peek_ns() < START + seconds * NS:
        out.append(path.pop())
    return out, path


def test_same_seed_same_path_other_seed_other_path():
    a, _ = run(1, 600)
    b, _ = run(1, 600)
    c, _ = run(2, 600)
    assert a == b and a != c


def test_timestamps_never_go_backwards_and_prices_positive():
    ticks, _ = run(3, 1800)
    ts = [t for t, _ in ticks]
    assert ts == sorted(ts) and all(p > 0 for _, p in ticks)


def test_storms_are_bursts_of_thousands_of_ticks_per_second():
    params = MarketParams(storms_per_hour=20, storm_rate=4000, storm_seconds=1.0)
    ticks, path = run(4, 900, params)
    assert any(e.endswith(":storm") for e in path.events)
    per_second = np.bincount(((np.array([t for t, _ in ticks]) - START) // NS).astype(int))
    assert per_second.max() >= 2000


def test_gaps_jump_the_price():
    params = MarketParams(gaps_per_hour=30, gap_atr=3.0, base_tick_rate=2.0)
    _, path = run(5, 600, params)
    gaps = [e for e in path.events if ":gap:" in e]
    assert gaps and max(abs(float(e.split(":")[-1])) for e in gaps) > 0.02


def test_overnight_session_skip():
    _, close = session_bounds(START)
    quiet = MarketParams(base_tick_rate=0.2, storms_per_hour=0, gaps_per_hour=0)
    ticks, path = run(6, 25 * 3600, quiet)  # past the 16:00 close, into the next session
    after_close = [t for t, _ in ticks if t >= close]
    assert after_close and min(after_close) >= next_open(close)
    assert any(":overnight_gap:" in e for e in path.events)


def test_daily_history_ends_at_start_price_with_sane_atr():
    bars = daily_history(SPEC, 60, START, np.random.default_rng(0))
    assert len(bars) == 60 and abs(bars[-1].close - SPEC.start_price) < 1e-6
    assert all(b.low <= min(b.open, b.close) and b.high >= max(b.open, b.close) for b in bars)
    atr = wilder_atr(bars, 14)
    assert 0.005 * SPEC.start_price < atr < 0.08 * SPEC.start_price


def test_quotes_on_tick_grid_mostly_valid():
    rng = np.random.default_rng(1)
    params = MarketParams(bad_tick_prob=0.01, locked_prob=0.01)
    quotes = [quote(100.003, SPEC, params, rng) for _ in range(5000)]
    crossed = sum(b > a for b, a in quotes)
    locked = sum(b == a for b, a in quotes)
    assert 10 < crossed < 100 and 10 < locked < 100
    assert all(abs(round(b * 100) - b * 100) < 1e-6 for b, _ in quotes)
