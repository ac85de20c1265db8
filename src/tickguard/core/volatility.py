"""Volatility math (pure core): ATR with Wilder's smoothing and ADR from daily bars.

Exit distances are expressed in these units, so a wrong ATR silently mis-sizes every stop: the functions
here are small, numpy-based and tested against hand-worked values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tickguard.core.model import Bar


class NotEnoughBars(ValueError):
    """Raised when a volatility figure is asked of fewer bars than its period needs."""


@dataclass(slots=True, frozen=True)
class VolSnapshot:
    """The volatility the levels of one symbol are sized with, and when it was computed."""

    symbol: str
    atr: float
    adr: float
    ts_ns: int


def _arrays(bars: Sequence[Bar]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    high = np.fromiter((b.high for b in bars), dtype=np.float64, count=len(bars))
    low = np.fromiter((b.low for b in bars), dtype=np.float64, count=len(bars))
    close = np.fromiter((b.close for b in bars), dtype=np.float64, count=len(bars))
    if np.any(high < low):
        raise ValueError("a bar has high < low")
    return high, low, close


def true_ranges(bars: Sequence[Bar]) -> np.ndarray:
    """True range per bar; the first bar has no previous close, so its TR is its high - low."""
    high, low, close = _arrays(bars)
    tr = high - low
    if len(bars) > 1:
        prev = close[:-1]
        tr[1:] = np.maximum.reduce([tr[1:], np.abs(high[1:] - prev), np.abs(low[1:] - prev)])
    return tr


def wilder_atr_series(bars: Sequence[Bar], period: int = 14) -> np.ndarray:
    """ATR after each bar from bar ``period - 1`` on: seeded with the mean of the first ``period`` TRs,
    then ATR_t = (ATR_{t-1} * (period - 1) + TR_t) / period (Wilder's smoothing)."""
    if period < 1:
        raise ValueError("ATR period must be >= 1")
    if len(bars) < period:
        raise NotEnoughBars(f"ATR({period}) needs at least {period} bars, got {len(bars)}")
    tr = true_ranges(bars)
    out = np.empty(len(tr) - period + 1)
    atr = float(tr[:period].mean())
    out[0] = atr
    for i, value in enumerate(tr[period:], start=1):
        atr = (atr * (period - 1) + float(value)) / period
        out[i] = atr
    return out


def wilder_atr(bars: Sequence[Bar], period: int = 14) -> float:
    """The latest ATR(period)."""
    return float(wilder_atr_series(bars, period)[-1])


def adr(bars: Sequence[Bar], period: int = 20) -> float:
    """Average daily range: the simple mean of high - low over the last ``period`` bars."""
    if period < 1:
        raise ValueError("ADR period must be >= 1")
    if len(bars) < period:
        raise NotEnoughBars(f"ADR({period}) needs at least {period} bars, got {len(bars)}")
    high, low, _ = _arrays(bars[-period:])
    return float((high - low).mean())


def snapshot(symbol: str, bars: Sequence[Bar], atr_period: int, adr_period: int, ts_ns: int) -> VolSnapshot:
    """Daily ATR and ADR for one symbol, checked to be usable for sizing levels."""
    atr_value = wilder_atr(bars, atr_period)
    adr_value = adr(bars, adr_period)
    if not (atr_value > 0 and adr_value > 0):
        raise ValueError(f"{symbol}: volatility must be positive (ATR={atr_value}, ADR={adr_value})")
    return VolSnapshot(symbol, atr_value, adr_value, ts_ns)


# ----------------------------------------------------------------------------------- intraday refresh


class MinuteBars:
    """1-minute mid-price bars of one symbol, built from ticks, keeping the last ``keep`` completed bars.

    Cheap on the tick path: one comparison for the minute boundary and two for the extremes."""

    __slots__ = ("bars", "close", "end_ns", "high", "keep", "low", "open", "start_ns")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.bars: list[Bar] = []
        self.start_ns = self.end_ns = -1
        self.open = self.high = self.low = self.close = math.nan

    def add(self, ts_ns: int, price: float) -> bool:
        """Fold one price in; True when it completed a bar (the caller may then check for a regime change)."""
        if ts_ns < self.end_ns:
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            self.close = price
            return False
        done = self.end_ns > 0
        if done:
            self.bars.append(Bar(self.start_ns, self.open, self.high, self.low, self.close))
            if len(self.bars) > self.keep:
                del self.bars[0]
        self.start_ns = ts_ns - ts_ns % 60_000_000_000
        self.end_ns = self.start_ns + 60_000_000_000
        self.open = self.high = self.low = self.close = price
        return done


@dataclass(slots=True, frozen=True)
class IntradayRule:
    """How intraday volatility is blended into the daily one (documented in the README).

    * intraday ATR = Wilder ATR(``period``) of completed 1-minute bars, scaled to a day by
      sqrt(``session_minutes``) (a random walk's range grows with the square root of time);
    * weight w = ``weight`` x min(1, bars / ``period``): no intraday say before there are bars;
    * ATR used = (1 - w) x daily ATR + w x scaled intraday ATR; the ADR is scaled by the same ratio;
    * a regime change - the range of the last ``regime_bars`` bars above ``regime_k`` x the ATR in force -
      triggers a refresh at once instead of at the next interval.
    """

    period: int = 30
    weight: float = 0.5
    session_minutes: float = 390.0
    regime_bars: int = 5
    regime_k: float = 0.5


def blended(daily: VolSnapshot, bars: Sequence[Bar], rule: IntradayRule, ts_ns: int) -> VolSnapshot:
    """The daily snapshot blended with the intraday bars (the daily one unchanged if there are too few)."""
    n = len(bars)
    if n < 2:
        return daily
    period = min(rule.period, n)
    intraday = wilder_atr(bars[-period - 1:] if n > period else bars, period) * math.sqrt(rule.session_minutes)
    w = rule.weight * min(1.0, n / rule.period)
    atr = (1 - w) * daily.atr + w * intraday
    return VolSnapshot(daily.symbol, atr, daily.adr * atr / daily.atr, ts_ns)


def regime_changed(bars: Sequence[Bar], atr_in_force: float, rule: IntradayRule) -> bool:
    if len(bars) < rule.regime_bars:
        return False
    recent = bars[-rule.regime_bars:]
    return max(b.high for b in recent) - min(b.low for b in recent) > rule.regime_k * atr_in_force
