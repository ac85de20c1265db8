"""An independent, brute-force re-implementation of the exit rules, for checking the engine's report.

It walks every recorded tick of every trade's symbol in order and recomputes every level from scratch,
with none of the engine's data structures (no trigger book, no conflation, no signed-space helpers).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo


@dataclass
class RefTick:
    seq: int
    ts: int
    bid: float
    ask: float
    last: float


def valid_ticks(rows: list[list]) -> dict[str, list[RefTick]]:
    """Recorded ticks per symbol, with the same validity rules as the engine (crossed etc. dropped)."""
    out: dict[str, list[RefTick]] = {}
    last_ts: dict[str, int] = {}
    for seq, sym, ts, bid, ask, last in rows:
        last = math.nan if last is None else last
        if bid is None or ask is None or not (math.isfinite(bid) and math.isfinite(ask)):
            continue
        if bid <= 0 or ask <= 0 or bid > ask:
            continue
        if not math.isnan(last) and last <= 0:
            continue
        if sym in last_ts and ts < last_ts[sym]:
            continue
        last_ts[sym] = ts
        out.setdefault(sym, []).append(RefTick(seq, ts, bid, ask, last))
    return out


def _price(tick: RefTick, source: str, side: str) -> float:
    if source == "auto":
        source = "bid" if side == "long" else "ask"
    return {"bid": tick.bid, "ask": tick.ask, "last": tick.last, "mid": (tick.bid + tick.ask) * 0.5}[source]


def _unit(rule: dict, vol: dict) -> float:
    return {"atr": vol["atr"], "adr": vol["adr"], "price": 1.0}[rule.get("unit", "atr")]


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
                updates: list[tuple[int, float, float]] = ()) -> dict[str, tuple]:
    """leg -> ("tick", seq) or ("time", ts_ns): where each leg must first fire, per the rules.

    ``updates`` are the (ts_ns, atr, adr) refreshes of the symbol's volatility; one applies to the ticks
    after it: a stop-loss re-sized only if tighter (unless allow_loosen), targets re-sized, a break-even
    armed if the new unit says so, a trailing stop keeping its level (new extremes use the new unit)."""
    vol = dict(vol0)
    pending = sorted(updates)
    side = trade["side"]
    s = 1 if side == "long" else -1
    rules = trade["rules"]
    by = {r["kind"]: r for r in rules}
    tps = [r for r in rules if r["kind"] == "take_profit"]
    sl, tr, be, ts_rule = by.get("stop_loss"), by.get("trailing_stop"), by.get("break_even"), by.get("time_stop")
    stop_src = (sl or tr or {"trigger": "auto"}).get("trigger", "auto")
    fills = sorted(entry_fills, key=lambda f: f["ts_ns"])
    filled = cost = Decimal(0)
    avg = 0.0
    base = trail = be_lvl = None
    best = -math.inf
    deadline = None
    fired: dict[str, tuple] = {}
    tp_levels: list[float] = []
    fi = 0

    def stop_level():
        parts = [p for p in (base, trail, be_lvl) if p is not None]
        return max(parts) if parts else None

    def tp_cover_all() -> bool:
        return len(tps) > 0 and all(f"tp{i + 1}" in fired for i in range(len(tps))) and filled >= Decimal(trade["qty"])

    for tick in ticks:
        while pending and pending[0][0] < tick.ts:
            _, atr, adr = pending.pop(0)
            vol = {"atr": atr, "adr": adr}
            if filled > 0:
                if sl is not None:
                    lvl = s * sl["price"] if sl.get("price") is not None else s * avg - sl["distance"] * _unit(sl, vol)
                    if sl.get("allow_loosen") or base is None or lvl > base:
                        base = lvl
                if be is not None and be_lvl is None and best - s * avg >= be["after"] * _unit(be, vol):
                    be_lvl = s * avg + be["offset"]
                tp_levels = [s * r["price"] if r.get("price") is not None
                             else s * avg + r["distance"] * _unit(r, vol) for r in tps]
        while fi < len(fills) and fills[fi]["ts_ns"] <= tick.ts:
            f = fills[fi]
            fi += 1
            first = filled == 0
            qty, price = Decimal(f["qty"]), Decimal(f["price"])  # the report's exact decimals
            filled += qty
            cost += price * qty
            avg = float(cost / filled)  # the average entry, correctly rounded to a price
            if first:
                best = s * float(price)
                if ts_rule is not None:
                    deadline = _deadline(ts_rule, f["ts_ns"])
            if sl is not None:
                lvl = s * sl["price"] if sl.get("price") is not None else s * avg - sl["distance"] * _unit(sl, vol)
                if first or sl.get("allow_loosen") or base is None or lvl > base:
                    base = lvl
            if tr is not None and first:
                u = _unit(tr, vol)
                act = tr.get("activate_after")
                trail = best - tr["distance"] * u if act is None or best - s * avg >= act * u else None
            if be is not None and be_lvl is None and best - s * avg >= be["after"] * _unit(be, vol):
                be_lvl = s * avg + be["offset"]
            tp_levels = [s * r["price"] if r.get("price") is not None else s * avg + r["distance"] * _unit(r, vol)
                         for r in tps]
        if filled == 0:
            continue
        if deadline is not None and tick.ts > deadline:
            fired["time"] = ("time", deadline)
            return fired
        x = s * _price(tick, stop_src, side)
        lvl = stop_level()
        if lvl is not None and x <= lvl and not tp_cover_all():
            fired["stop"] = ("tick", tick.seq)
            return fired
        for i, r in enumerate(tps):
            name = f"tp{i + 1}"
            if name not in fired and s * _price(tick, r.get("trigger", "auto"), side) >= tp_levels[i]:
                fired[name] = ("tick", tick.seq)
        if (tr is not None or be is not None) and x > best:
            best = x
            if tr is not None:
                u = _unit(tr, vol)
                act = tr.get("activate_after")
                if act is None or best - s * avg >= act * u:
                    cand = best - tr["distance"] * u
                    if trail is None or cand > trail:
                        trail = cand
            if be is not None and be_lvl is None and best - s * avg >= be["after"] * _unit(be, vol):
                be_lvl = s * avg + be["offset"]
            lvl = stop_level()
            if lvl is not None and x <= lvl and not tp_cover_all():
                fired["stop"] = ("tick", tick.seq)
                return fired
    return fired
