"""An independent, brute-force re-implementation of the exit rules, for checking the engine's report.

It walks every recorded tick of every trade's symbol in order and recomputes every level from scratch,
with none of the engine's data structures (no trigger book, no conflation, no price-grid helpers).

Every price, level, distance and comparison is exact. Prices and rule numbers enter as ``Decimal`` made from
their shortest decimal text (a float 169.39 is Decimal("169.39"), not its binary neighbour), and levels are
worked out as ``Fraction`` so that an average entry such as (a + b + c) / 3 loses nothing. A float reference
would share the engine's float bugs (169.37 + 0.02 = 169.39000000000001, which an ask of 169.39 never
reaches) instead of catching them.

The rounding rule, with T the instrument's tick size and unit = ATR, ADR, or 1 for unit "price":
  * a distance from a rule is a whole number of ticks, n = floor(value * unit / T), at least 1 for the
    stop-loss, take-profit and trailing distances and the break-even ``after``; ``activate_after`` may be 0;
  * a level is put on the grid (the multiples of T) towards the entry: a stop tighter, a target nearer.

Internally a price p is held signed, x = s * p (s = +1 long, -1 short), so that "better for the trade" is
always "higher": a stop fires when x <= level, a target when x >= level (touch fires), the effective stop is the
highest armed component, and, the grid being symmetric about 0, "towards the entry" is a ceiling for every
stop level and a floor for every target level, on both sides.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo


@dataclass
class RefTick:
    seq: int
    ts: int
    bid: Decimal
    ask: Decimal
    last: Decimal | None  # None: no last trade on this tick


def _dec(x: Any) -> Decimal:
    """x as a Decimal from its shortest decimal text: what a float was meant to say, not its binary value."""
    return Decimal(float.__repr__(x) if isinstance(x, float) else str(x))


def _q(x: Any) -> Fraction:
    """x as an exact rational, by way of its shortest decimal text."""
    return Fraction(_dec(x))


def valid_ticks(rows: Iterable[Sequence[Any]]) -> dict[str, list[RefTick]]:
    """Recorded ticks per symbol, with the same validity rules as the engine (crossed etc. dropped).

    Rows are (seq, sym, ts, bid, ask, last). Bid and ask must be present, finite, > 0 and not crossed; a last
    must be absent or > 0 (a NaN last is how a float feed says "absent"); time must not go backwards per symbol.
    """
    out: dict[str, list[RefTick]] = {}
    last_ts: dict[str, int] = {}
    for seq, sym, ts, bid, ask, last in rows:
        if bid is None or ask is None:
            continue
        b, a = _dec(bid), _dec(ask)
        t = None if last is None or _dec(last).is_nan() else _dec(last)
        if not (b.is_finite() and a.is_finite()) or b <= 0 or a <= 0 or b > a:
            continue
        if t is not None and t <= 0:
            continue
        if sym in last_ts and ts < last_ts[sym]:
            continue
        last_ts[sym] = ts
        out.setdefault(sym, []).append(RefTick(seq, ts, b, a, t))
    return out


def _signed(tick: RefTick, source: str, s: int) -> Fraction | None:
    """s * the trigger source's price on this tick, or None when it has none (no, or an infinite, last)."""
    if source == "auto":
        source = "bid" if s > 0 else "ask"
    if source == "mid":
        return s * (Fraction(tick.bid) + Fraction(tick.ask)) / 2  # a half-tick mid stays exact
    p = {"bid": tick.bid, "ask": tick.ask, "last": tick.last}[source]
    return None if p is None or not p.is_finite() else s * Fraction(p)


def _unit(rule: dict, vol: dict) -> Fraction:
    """One unit of a rule in price.  ATR and ADR are float statistics: the documented rule takes them to 12
    significant digits (``0.01999999999999602`` is 0.02), so float noise in them never costs a tick."""
    unit = rule.get("unit", "atr")
    return Fraction(1) if unit == "price" else Fraction(Decimal(format(float(vol[unit]), ".12g")))


def _ticks(value: Any, unit: Fraction, t: Fraction, least: int | None = 1) -> Fraction:
    """A rule's distance in price: floor(value * unit / T) whole ticks (at least ``least`` of them), times T."""
    n = math.floor(_q(value) * unit / t)
    return (n if least is None else max(least, n)) * t


def _ceil(p: Fraction, t: Fraction) -> Fraction:
    """The smallest multiple of T that is >= p."""
    return math.ceil(p / t) * t


def _floor(p: Fraction, t: Fraction) -> Fraction:
    """The largest multiple of T that is <= p."""
    return math.floor(p / t) * t


def _deadline(rule: dict, entry_ts: int) -> int:
    if rule.get("after_seconds") is not None:
        return entry_ts + int(rule["after_seconds"] * 1e9)
    zone = ZoneInfo(rule["tz"])
    at = dt.time.fromisoformat(rule["at"])
    entered = dt.datetime.fromtimestamp(entry_ts / 1e9, tz=zone)
    target = dt.datetime.combine(entered.date(), at, tzinfo=zone)
    if target <= entered:
        target = dt.datetime.combine(entered.date() + dt.timedelta(days=1), at, tzinfo=zone)
    return int(target.timestamp() * 1e9)


def first_exits(trade: dict, entry_fills: list[dict], ticks: list[RefTick], vol0: dict,
                updates: Iterable[tuple[int, Any, Any]] = (), *,
                tick_size: Decimal = Decimal("0.01")) -> dict[str, tuple]:
    """leg -> ("tick", seq) or ("time", ts_ns): where each leg must first fire, per the rules.

    ``updates`` are the (ts_ns, atr, adr) refreshes of the symbol's volatility; one applies to the ticks
    after it: a stop-loss re-sized only if tighter (unless allow_loosen), targets re-sized, a break-even
    armed if the new unit says so, a trailing stop keeping its level (new extremes use the new unit).
    ``tick_size`` is the instrument's minimum tick T: every level is a multiple of it (see the module doc)."""
    t = _q(tick_size)
    vol = dict(vol0)
    pending = sorted(updates)
    s = 1 if trade["side"] == "long" else -1
    rules = trade["rules"]
    by = {r["kind"]: r for r in rules}
    tps = [r for r in rules if r["kind"] == "take_profit"]
    sl, tr, be, ts_rule = by.get("stop_loss"), by.get("trailing_stop"), by.get("break_even"), by.get("time_stop")
    stop_src = (sl or tr or {"trigger": "auto"}).get("trigger", "auto")
    fills = sorted(entry_fills, key=lambda f: f["ts_ns"])
    filled = cost = entry = best = Fraction(0)  # entry: s * the exact average entry; best: signed extreme
    base: Fraction | None = None
    trail: Fraction | None = None
    be_lvl: Fraction | None = None
    deadline = None
    fired: dict[str, tuple] = {}
    tp_levels: list[Fraction] = []
    fi = 0

    def sl_level() -> Fraction:
        """The stop-loss: its price as given, or the entry less D, ceiled onto the grid (tighter)."""
        if sl.get("price") is not None:
            return s * _q(sl["price"])
        return _ceil(entry - _ticks(sl["distance"], _unit(sl, vol), t), t)

    def tp_level(r: dict) -> Fraction:
        """A target: its price as given, or the entry plus D, floored onto the grid (nearer)."""
        if r.get("price") is not None:
            return s * _q(r["price"])
        return _floor(entry + _ticks(r["distance"], _unit(r, vol), t), t)

    def trail_candidate() -> Fraction | None:
        """The trailing level for the current best (best less D, ceiled), or None while not yet activated."""
        u = _unit(tr, vol)
        act = tr.get("activate_after")
        if act is not None and best - entry < _ticks(act, u, t, least=None):
            return None
        return _ceil(best - _ticks(tr["distance"], u, t), t)

    def arm_break_even() -> None:
        """Arm the break-even (once) when the best has gone ``after`` beyond the entry: level entry + offset."""
        nonlocal be_lvl
        if be is not None and be_lvl is None and best - entry >= _ticks(be["after"], _unit(be, vol), t):
            be_lvl = _ceil(entry + _q(be["offset"]), t)

    def stop_level() -> Fraction | None:
        parts = [p for p in (base, trail, be_lvl) if p is not None]
        return max(parts) if parts else None

    def tp_cover_all() -> bool:
        return len(tps) > 0 and all(f"tp{i + 1}" in fired for i in range(len(tps))) and filled >= _q(trade["qty"])

    for tick in ticks:
        while pending and pending[0][0] < tick.ts:
            _, atr, adr = pending.pop(0)
            vol = {"atr": atr, "adr": adr}
            if filled > 0:
                if sl is not None:
                    lvl = sl_level()
                    if sl.get("allow_loosen") or base is None or lvl > base:
                        base = lvl
                arm_break_even()
                tp_levels = [tp_level(r) for r in tps]
        while fi < len(fills) and fills[fi]["ts_ns"] <= tick.ts:
            f = fills[fi]
            fi += 1
            first = filled == 0
            qty, price = _q(f["qty"]), _q(f["price"])  # the report's exact decimals
            filled += qty
            cost += price * qty
            entry = s * cost / filled
            best = s * price  # moves are measured from the latest entry fill
            if first and ts_rule is not None:
                deadline = _deadline(ts_rule, f["ts_ns"])
            if sl is not None:
                base = sl_level()  # after a fill: the distance from the new average entry, both ways
            if tr is not None and first:
                trail = trail_candidate()
            arm_break_even()
            tp_levels = [tp_level(r) for r in tps]
        if filled == 0:
            continue
        if deadline is not None and tick.ts > deadline:
            fired["time"] = ("time", deadline)
            return fired
        x = _signed(tick, stop_src, s)
        lvl = stop_level()
        if x is not None and lvl is not None and x <= lvl and not tp_cover_all():
            fired["stop"] = ("tick", tick.seq)
            return fired
        for i, r in enumerate(tps):
            name = f"tp{i + 1}"
            y = _signed(tick, r.get("trigger", "auto"), s)
            if name not in fired and y is not None and y >= tp_levels[i]:
                fired[name] = ("tick", tick.seq)
        if (tr is not None or be is not None) and x is not None and x > best:
            best = x
            if tr is not None:
                cand = trail_candidate()
                if cand is not None and (trail is None or cand > trail):
                    trail = cand
            arm_break_even()
            lvl = stop_level()
            if lvl is not None and x <= lvl and not tp_cover_all():
                fired["stop"] = ("tick", tick.seq)
                return fired
    return fired
