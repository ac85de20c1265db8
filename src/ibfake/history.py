"""Historical bars for reqHistoricalData: the venue's daily history plus intraday bars.

Why intraday bars are partly synthetic: the venue only knows ticks from its start onwards, but an
engine asks for "the last day of 1-minute bars" right after connecting. Minutes before the venue's
start are a seeded random walk over the previous regular sessions that ends exactly at the
symbol's start price (so they join the live part without a gap); minutes after it are aggregated
from the ticks the venue actually produced. Both are deterministic for a seed.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

import numpy as np

from tickguard.adapters.sim.market import NY, SymbolSpec
from tickguard.adapters.sim.venue import Quote

from . import outgoing as out

NS = 1_000_000_000
MINUTE_NS = 60 * NS
BACKFILL_SESSIONS = 5
SESSION_MINUTES = 390


class HistoryRequestError(ValueError):
    """The request cannot be answered as asked (sent to the client as error 162)."""


@dataclass(slots=True)
class MinuteBar:
    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    count: int = 0

    def add(self, price: float, size: float) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += size
        self.count += 1


@dataclass(slots=True)
class _SymbolMinutes:
    backfill: list[MinuteBar] | None = None
    live: dict[int, MinuteBar] = field(default_factory=dict)


_DURATION = re.compile(r"^\s*(\d+)\s*([SDWMY])\s*$")
_BAR_SIZE = re.compile(r"^\s*(\d+)\s*(secs?|mins?|hours?|days?|weeks?)\s*$")
_UNIT_SECONDS = {"sec": 1, "min": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}


def parse_duration(text: str) -> tuple[int, str]:
    match = _DURATION.match(text)
    if not match:
        raise HistoryRequestError(f"invalid duration {text!r} (expected like '2 D')")
    return int(match.group(1)), match.group(2)


def parse_bar_size(text: str) -> int:
    """Bar size in seconds; 86400 for daily, 604800 for weekly."""
    match = _BAR_SIZE.match(text)
    if not match:
        raise HistoryRequestError(f"Historical data bar size setting is invalid: {text!r}")
    unit = match.group(2).rstrip("s")
    seconds = int(match.group(1)) * _UNIT_SECONDS[unit]
    if seconds < 60 and unit == "sec":
        raise HistoryRequestError(f"bar size {text!r} is not supported by the fake gateway (use >= 1 min)")
    return seconds


def parse_end(text: str, now_ns: int) -> int:
    """``""`` is now; otherwise IB's ``yyyymmdd hh:mm:ss [zone]`` or ``yyyymmdd-hh:mm:ss`` (UTC)."""
    text = text.strip()
    if not text:
        return now_ns
    try:
        if "-" in text and " " not in text:
            stamp = dt.datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=dt.UTC)
        else:
            parts = text.split(" ")
            stamp = dt.datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S")
            zone = parts[2] if len(parts) > 2 else "America/New_York"
            stamp = stamp.replace(tzinfo=dt.UTC if zone in ("UTC", "GMT") else _zone(zone))
    except (ValueError, IndexError) as exc:
        raise HistoryRequestError(f"invalid end date/time {text!r}") from exc
    return int(stamp.timestamp() * NS)


def _zone(name: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise HistoryRequestError(f"unknown time zone {name!r}") from exc


def _session_date(ts_ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts_ns / NS, tz=NY).date()


def _bar_date(bar: out.Bar) -> dt.date:
    return bar.date.date() if isinstance(bar.date, dt.datetime) else bar.date


def ib_time(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / NS, tz=NY).strftime("%Y%m%d %H:%M:%S") + " US/Eastern"


class HistoryBook:
    """Keeps 1-minute bars per symbol and answers historical requests from them and the daily history."""

    def __init__(self, seed: int, specs: dict[str, SymbolSpec], start_ns: int) -> None:
        self._seed = seed
        self._specs = specs
        self._start_ns = start_ns
        self._minutes: dict[str, _SymbolMinutes] = {s: _SymbolMinutes() for s in specs}

    def on_tick(self, tick: Quote) -> None:
        """Aggregate a venue tick (its trade price) into its minute; crossed quotes are bad prints."""
        if not tick.bid <= tick.ask or math.isnan(tick.last):
            return
        book = self._minutes.get(tick.symbol)
        if book is None:
            return
        start = tick.ts_ns - tick.ts_ns % MINUTE_NS
        bar = book.live.get(start)
        if bar is None:
            book.live[start] = MinuteBar(start, tick.last, tick.last, tick.last, tick.last, tick.size, 1)
        else:
            bar.add(tick.last, tick.size)

    def _backfill(self, symbol: str) -> list[MinuteBar]:
        book = self._minutes[symbol]
        if book.backfill is None:
            book.backfill = synthetic_minutes(self._specs[symbol], self._start_ns, self._seed)
        return book.backfill

    def minute_bars(self, symbol: str) -> list[MinuteBar]:
        live = self._minutes[symbol].live
        return self._backfill(symbol) + [live[k] for k in sorted(live)]

    def intraday(self, symbol: str, bar_seconds: int, duration: str, end_ns: int) -> list[out.Bar]:
        """Bars of ``bar_seconds`` (a multiple of a minute) ending before ``end_ns``.

        Durations in days/weeks/months/years count *sessions* (what IB returns for "1 D" of
        minute bars: the last trading day, not the last 24 hours); seconds count wall seconds.
        """
        count, unit = parse_duration(duration)
        minutes = [b for b in self.minute_bars(symbol) if b.ts_ns < end_ns]
        if unit == "S":
            minutes = [b for b in minutes if b.ts_ns >= end_ns - count * NS]
        else:
            sessions = count * {"D": 1, "W": 5, "M": 21, "Y": 252}[unit]
            dates = sorted({_session_date(b.ts_ns) for b in minutes})[-sessions:]
            keep = set(dates)
            minutes = [b for b in minutes if _session_date(b.ts_ns) in keep]
        return _aggregate(minutes, bar_seconds * NS)

    def daily(self, symbol: str, history: list, duration: str, end_ns: int) -> list[out.Bar]:
        """The venue's daily history plus today's bar built from live minutes, ending at ``end_ns``.

        The duration is a calendar span, as IB reads it for daily bars: "60 D" is the sessions of the last 60
        calendar days (about 42 bars), "1 Y" a year of them (about 252); not N bars."""
        count, unit = parse_duration(duration)
        span = math.ceil(count / 86400) if unit == "S" else count * {"D": 1, "W": 7, "M": 30, "Y": 365}[unit]
        first = _session_date(end_ns) - dt.timedelta(days=span - 1)
        bars = [out.Bar(_session_date(b.ts_ns), b.open, b.high, b.low, b.close, b.volume, b.close, 1)
                for b in history if b.ts_ns < end_ns]  # fmt: skip
        live = [b for b in self._minutes[symbol].live.values() if b.ts_ns < end_ns]
        if live:
            today = max(_session_date(b.ts_ns) for b in live)
            todays = sorted((b for b in live if _session_date(b.ts_ns) == today), key=lambda b: b.ts_ns)
            bars = [b for b in bars if b.date != today]
            bars.append(_combine(today, todays))
        return [b for b in bars if _bar_date(b) >= first]


def _combine(date: dt.date | dt.datetime, minutes: list[MinuteBar]) -> out.Bar:
    volume = sum(b.volume for b in minutes)
    wap = sum(b.close * b.volume for b in minutes) / volume if volume else minutes[-1].close
    return out.Bar(
        date,
        minutes[0].open,
        max(b.high for b in minutes),
        min(b.low for b in minutes),
        minutes[-1].close,
        volume,
        round(wap, 6),
        sum(b.count for b in minutes),
    )


def _aggregate(minutes: list[MinuteBar], size_ns: int) -> list[out.Bar]:
    groups: dict[int, list[MinuteBar]] = {}
    for bar in minutes:
        groups.setdefault(bar.ts_ns - bar.ts_ns % size_ns, []).append(bar)
    return [_combine(dt.datetime.fromtimestamp(start / NS, tz=NY), groups[start]) for start in sorted(groups)]


def synthetic_minutes(spec: SymbolSpec, start_ns: int, seed: int) -> list[MinuteBar]:
    """Minute bars for the ``BACKFILL_SESSIONS`` regular sessions before ``start_ns``.

    The walk's volatility is the symbol's daily sigma spread over a session, and it is scaled so
    that the last close equals the start price the live path begins from.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, spec.con_id, 0x6D696E]))
    day = _session_date(start_ns)
    sessions: list[int] = []
    while len(sessions) < BACKFILL_SESSIONS:
        opening = int(dt.datetime.combine(day, dt.time(9, 30), tzinfo=NY).timestamp()) * NS
        if day.weekday() < 5 and opening + SESSION_MINUTES * MINUTE_NS <= start_ns:
            sessions.append(opening)
        day -= dt.timedelta(days=1)
    sessions.reverse()
    n = len(sessions) * SESSION_MINUTES
    sigma = spec.daily_sigma / math.sqrt(SESSION_MINUTES)
    steps = rng.normal(0.0, sigma, n)
    log_close = np.cumsum(steps)
    log_close += math.log(spec.start_price) - log_close[-1]
    log_open = np.concatenate([[log_close[0] - steps[0]], log_close[:-1]])
    wick_up = np.abs(rng.normal(0.0, sigma / 2, n))
    wick_dn = np.abs(rng.normal(0.0, sigma / 2, n))
    volume = rng.integers(1, 50, n) * 100
    tick = spec.min_tick
    bars: list[MinuteBar] = []
    for i in range(n):
        ts = sessions[i // SESSION_MINUTES] + (i % SESSION_MINUTES) * MINUTE_NS
        o, c = math.exp(log_open[i]), math.exp(log_close[i])
        h = max(o, c) * math.exp(wick_up[i])
        low = min(o, c) * math.exp(-wick_dn[i])
        o, h, low, c = (round(round(x / tick) * tick, 6) for x in (o, h, low, c))
        bars.append(MinuteBar(ts, o, max(o, h, c), min(o, low, c), c, float(volume[i]), 10))
    return bars
