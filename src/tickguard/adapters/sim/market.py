"""Seeded price paths: volatility regimes, intraday and overnight gaps, tick storms, daily bar history.

Paths are generated segment by segment with numpy (a segment has one tick rate and one volatility), so a
storm of thousands of ticks per second costs one vectorised draw, and a seed always gives the same path.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from tickguard.core.model import Bar

NY = ZoneInfo("America/New_York")
NS = 1_000_000_000
SESSION_SECONDS = 6.5 * 3600


@dataclass(slots=True, frozen=True)
class MarketParams:
    """Knobs of the simulated market (see config.SimConfig for their documentation)."""

    vol_multiplier: float = 4.0
    base_tick_rate: float = 8.0
    volatile_rate_factor: float = 4.0
    volatile_sigma_factor: float = 2.5
    mean_calm_s: float = 900.0
    mean_volatile_s: float = 180.0
    storms_per_hour: float = 2.0
    storm_rate: float = 3000.0
    storm_seconds: float = 1.5
    gaps_per_hour: float = 0.5
    gap_atr: float = 1.5
    spread_bps: float = 2.0
    locked_prob: float = 0.002
    bad_tick_prob: float = 0.0005


@dataclass(slots=True, frozen=True)
class SymbolSpec:
    symbol: str
    con_id: int
    start_price: float
    daily_sigma: float  # daily log-return standard deviation
    min_tick: float = 0.01
    exchange: str = "SMART"
    currency: str = "USD"


def make_symbols(n: int, rng: np.random.Generator) -> list[SymbolSpec]:
    """``n`` synthetic symbols with varied prices and volatilities."""
    specs = []
    for i in range(n):
        price = float(np.round(rng.uniform(15, 400), 2))
        specs.append(SymbolSpec(f"SIM{i + 1:03d}", 100_000 + i, price, float(rng.uniform(0.012, 0.035))))
    return specs


def session_bounds(ts_ns: int) -> tuple[int, int]:
    """Regular session (09:30-16:00 New York) of the day containing ``ts_ns``."""
    day = dt.datetime.fromtimestamp(ts_ns / NS, tz=NY).date()
    open_ = dt.datetime.combine(day, dt.time(9, 30), tzinfo=NY)
    close = dt.datetime.combine(day, dt.time(16, 0), tzinfo=NY)
    return int(open_.timestamp()) * NS, int(close.timestamp()) * NS


def next_open(ts_ns: int) -> int:
    """The next weekday session open strictly after ``ts_ns``."""
    day = dt.datetime.fromtimestamp(ts_ns / NS, tz=NY).date()
    while True:
        day += dt.timedelta(days=1)
        if day.weekday() < 5:
            return int(dt.datetime.combine(day, dt.time(9, 30), tzinfo=NY).timestamp()) * NS


def daily_history(spec: SymbolSpec, days: int, end_ns: int, rng: np.random.Generator) -> list[Bar]:
    """``days`` daily bars ending the session before ``end_ns``, whose last close is the start price."""
    rets = rng.normal(0.0, spec.daily_sigma, days)
    cum = np.cumsum(rets)
    closes = spec.start_price * np.exp(cum - cum[-1])
    prev = np.concatenate([[closes[0] * math.exp(-rets[0])], closes[:-1]])
    opens = prev * np.exp(rng.normal(0, spec.daily_sigma * 0.3, days))
    spread_up = np.abs(rng.normal(0, spec.daily_sigma * 0.6, days))
    spread_dn = np.abs(rng.normal(0, spec.daily_sigma * 0.6, days))
    highs = np.maximum(opens, closes) * np.exp(spread_up)
    lows = np.minimum(opens, closes) * np.exp(-spread_dn)
    bars = []
    for i, back in enumerate(_weekdays_back(end_ns, days)):  # sessions are weekdays, as at an exchange
        bars.append(Bar(end_ns - back * 86400 * NS, round(float(opens[i]), 4), round(float(highs[i]), 4),
                        round(float(lows[i]), 4), round(float(closes[i]), 4), float(rng.integers(1e5, 5e6))))
    return bars


def _weekdays_back(end_ns: int, count: int) -> list[int]:
    """How many calendar days before ``end_ns``'s New York date each of the last ``count`` weekdays before it
    is, oldest first."""
    end = dt.datetime.fromtimestamp(end_ns / NS, tz=NY).date()
    out, back = [], 0
    while len(out) < count:
        back += 1
        if (end - dt.timedelta(days=back)).weekday() < 5:
            out.append(back)
    return out[::-1]


class PricePath:
    """One symbol's tick stream, produced lazily in time order."""

    def __init__(self, spec: SymbolSpec, params: MarketParams, start_ns: int, rng: np.random.Generator):
        self.spec = spec
        self.p = params
        self.rng = rng
        self.now_ns = start_ns
        self.log_mid = math.log(spec.start_price)
        self.volatile = False
        self.regime_until = start_ns + self._regime_len()
        self._next_storm = start_ns + self._exp_ns(params.storms_per_hour)
        self._next_gap = start_ns + self._exp_ns(params.gaps_per_hour)
        self._sigma_s = spec.daily_sigma / math.sqrt(SESSION_SECONDS) * params.vol_multiplier
        self._buf_ts = np.empty(0, dtype=np.int64)
        self._buf_px = np.empty(0)
        self._i = 0
        self.events: list[str] = []  # "storm", "gap", "regime:volatile" ... with times, for the report

    def _exp_ns(self, per_hour: float) -> int:
        if per_hour <= 0:
            return 2**62
        return int(self.rng.exponential(3600.0 / per_hour) * NS)

    def _regime_len(self) -> int:
        mean = self.p.mean_volatile_s if self.volatile else self.p.mean_calm_s
        return int(self.rng.exponential(mean) * NS) + NS

    def peek_ns(self) -> int:
        while self._i >= len(self._buf_ts):
            self._refill()
        return int(self._buf_ts[self._i])

    def pop(self) -> tuple[int, float]:
        """Next (timestamp, mid price)."""
        ts = self.peek_ns()
        px = float(self._buf_px[self._i])
        self._i += 1
        return ts, px

    def _refill(self) -> None:
        """Generate the next segment: up to the next regime switch, storm, gap or session end."""
        p, rng = self.p, self.rng
        start = self.now_ns
        _, close = session_bounds(start)
        if start >= close:
            open_ = next_open(start)
            self._jump(rng.normal(0, self.spec.daily_sigma * 0.5), open_, "overnight_gap")
            start = self.now_ns = open_
            _, close = session_bounds(start)
        storm = self._next_storm <= start
        if storm:
            end = start + int(p.storm_seconds * NS)
            rate = p.storm_rate
            sigma = self._sigma_s * p.volatile_sigma_factor
            self._next_storm = end + self._exp_ns(p.storms_per_hour)
            self.events.append(f"{start}:storm")
        else:
            if start >= self.regime_until:
                self.volatile = not self.volatile
                self.regime_until = start + self._regime_len()
                self.events.append(f"{start}:{'volatile' if self.volatile else 'calm'}")
            if start >= self._next_gap:
                atr_px = self.spec.daily_sigma * 1.25
                self._jump(float(rng.choice([-1, 1])) * p.gap_atr * atr_px * rng.uniform(0.7, 1.4), start,
                           "gap")
                self._next_gap = start + self._exp_ns(p.gaps_per_hour)
            end = min(self.regime_until, self._next_storm, self._next_gap, start + 30 * NS)
            rate = p.base_tick_rate * (p.volatile_rate_factor if self.volatile else 1.0)
            sigma = self._sigma_s * (p.volatile_sigma_factor if self.volatile else 1.0)
        end = max(min(end, close), start + 1)
        span_s = (end - start) / NS
        n = int(rng.poisson(rate * span_s))
        if n == 0:
            self._buf_ts = np.empty(0, dtype=np.int64)
            self._buf_px = np.empty(0)
            self._i = 0
            self.now_ns = end
            return
        offsets = np.sort(rng.integers(0, end - start, n))
        ts = start + offsets
        ts = np.maximum.accumulate(ts)
        dts = np.diff(np.concatenate([[self.now_ns], ts])) / NS
        steps = rng.normal(0.0, 1.0, n) * sigma * np.sqrt(np.maximum(dts, 1e-6))
        path = self.log_mid + np.cumsum(steps)
        self.log_mid = float(path[-1])
        self._buf_ts = ts.astype(np.int64)
        self._buf_px = np.exp(path)
        self._i = 0
        self.now_ns = max(int(ts[-1]), end)

    def _jump(self, log_return: float, at_ns: int, kind: str) -> None:
        self.log_mid += log_return
        self.events.append(f"{at_ns}:{kind}:{log_return:+.4f}")


def quote(mid: float, spec: SymbolSpec, params: MarketParams, rng: np.random.Generator) -> tuple[float, float]:
    """Bid/ask around a mid on the tick grid; occasionally locked, and rarely crossed (a bad print)."""
    tick = spec.min_tick
    half = max(tick, mid * params.spread_bps * 1e-4 / 2)
    bid = math.floor((mid - half) / tick) * tick
    ask = math.ceil((mid + half) / tick) * tick
    u = rng.random()
    if u < params.bad_tick_prob:
        return round(ask + tick, 10), round(bid, 10)  # crossed: must be dropped by the engine
    if u < params.bad_tick_prob + params.locked_prob:
        ask = bid
    return round(bid, 10), round(ask, 10)
