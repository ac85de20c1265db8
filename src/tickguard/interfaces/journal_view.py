"""``tickguard trades``: the journal's trades, legs, orders and events, for people and scripts.

Money and quantities come out of the journal as ``Decimal``; ``select`` hands them on as strings in plain
notation (``"100"``, ``"0.1"``, ``"0.0000001"``: exact, never an exponent, never through a float), which is what
``--json`` prints, so a script reads the exact figure.  The figures inside the trade snapshot (``entry_filled``,
``entry_avg``, ``exited``, ``realized``) get the same form; a journal written before money was exact holds floats
there, which are shown as their shortest repr.  Trigger levels (``legs[].level``) are still floats.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Console
from rich.table import Table

from tickguard.store.journal import Journal


def select(target: str, state: str | None = None, symbol: str | None = None,
           user: str | None = None) -> list[dict[str, Any]]:
    """Trades matching the filters, each with its orders, fills and events.  Never creates a journal."""
    journal = Journal.open(target, create=False)
    try:
        rows = journal.list_trades(state=state, symbol=symbol, user=user)
        ids = [r["trade_id"] for r in rows]
        orders, fills, events = journal.orders_of(ids), journal.fills_of(ids), journal.events_of(ids)
        legs = journal.legs_of(ids)
    finally:
        journal.close()
    out = []
    for row in rows:
        tid = row["trade_id"]
        snap = row["snapshot"]
        out.append({
            "trade_id": tid, "user": row["user_id"], "account": row["account"], "symbol": row["symbol"],
            "side": row["side"], "qty": _text(row["qty"]), "state": row["state"],
            **{k: _figure(snap.get(k)) for k in ("entry_filled", "entry_avg", "exited", "realized")},
            "close_reason": snap.get("close_reason"),
            "legs": [{k: _text(v) for k, v in leg.items() if k != "trade_id"} for leg in legs
                     if leg["trade_id"] == tid],
            "request": row["request"],
            "orders": [{k: _text(o[k]) for k in ("order_key", "leg", "action", "qty", "status", "attempts",
                                                "broker_order_id", "filled", "avg_price", "commission", "reason")}
                       for o in orders if o["trade_id"] == tid],
            "fills": [{k: _text(f[k]) for k in ("exec_id", "order_key", "qty", "price", "commission", "ts_ns")}
                      for f in fills if f["trade_id"] == tid],
            "events": [{"seq": e["seq"], "ts_ns": e["ts_ns"], "kind": e["kind"], "data": e["data"]}
                       for e in events if e["trade_id"] == tid],
        })
    return out


def plain(d: Decimal) -> str:
    """``d`` for people and scripts: plain notation, exact, no trailing zeros after the point:
    ``Decimal("1E+2")`` -> ``"100"``, ``Decimal("100.0")`` -> ``"100"``, ``Decimal("1.50")`` -> ``"1.5"``,
    ``Decimal("1E-7")`` -> ``"0.0000001"``.  String work only: no context, so no digit is ever rounded away
    (``Decimal.normalize`` would round to the context's 28 digits, and ``str`` may give ``"1E+2"``)."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _decimal(x: Any) -> Decimal:
    """A figure as the journal may hold it - Decimal, its string, an int, or a float from an old journal
    (its shortest repr) - as a Decimal; missing is zero."""
    if x is None:
        return Decimal(0)
    if isinstance(x, float):
        return Decimal(repr(x))
    return x if isinstance(x, Decimal) else Decimal(x)


def _text(x: Any) -> Any:
    """A column value for ``select``: a Decimal as its plain string, anything else (text, ints, None, a trigger
    level, which is still a float) as it is."""
    return plain(x) if isinstance(x, Decimal) else x


def _figure(x: Any) -> str | None:
    """A money or quantity figure of the snapshot (a Decimal's string, or a float in an old journal) as a plain
    string; None stays None."""
    if x is None:
        return None
    try:
        return plain(_decimal(x))
    except (InvalidOperation, TypeError, ValueError):
        return x  # not a number: shown as the snapshot has it


def _money(x: Any, places: int = 2, most: int = 4) -> str:
    """Money for the table: exact, with thousands separators and at least ``places`` decimals; a computed figure
    with more than ``most`` decimals (an average price) is rounded to ``most`` for display only."""
    d = _decimal(x)
    decimals = max(0, -d.as_tuple().exponent) if d.is_finite() else 0
    return format(d, f",.{min(max(places, decimals), most)}f")


def _qty(x: Any) -> str:
    return plain(_decimal(x))


def render(data: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"{len(data)} trade(s)")
    for col in ("trade", "user", "account", "symbol", "side", "qty", "state", "entry", "exited", "realized",
                "close", "legs", "orders"):
        table.add_column(col)
    for t in data:
        orders = ", ".join(f"{o['leg']}:{o['status']}" for o in t["orders"])
        entry = f"{_qty(t['entry_filled'])}@{_money(t['entry_avg'])}"
        table.add_row(t["trade_id"], t["user"], t["account"], t["symbol"], t["side"], _qty(t["qty"]), t["state"],
                      entry, _qty(t["exited"]), _money(t["realized"]), t["close_reason"] or "",
                      " ".join(f"{leg['name']}@{_money(leg['level'])}" if leg["level"] is not None else leg["name"]
                               for leg in t["legs"]), orders)
    console.print(table)
    for line in health_lines(data):
        console.print(line, markup=False, highlight=False)


HEALTH_EVENTS = ("blind", "sighted")  # the market-data watchdog's events (runtime/watchdog.py)


def health_lines(data: list[dict[str, Any]]) -> list[str]:
    """One line per watchdog event of the listed trades: when a trade's symbol went blind and was sighted again."""
    lines = []
    for t in data:
        for e in t["events"]:
            if e["kind"] not in HEALTH_EVENTS:
                continue
            d = e["data"] or {}
            when = dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            if e["kind"] == "blind":
                what = f"BLIND: no valid tick for {d.get('silent_s', '?')}s; feed: {d.get('feed', '?')}"
            else:
                what = f"sighted again after {d.get('blind_s', '?')}s blind"
            lines.append(f"{t['trade_id']} {t['symbol']} {when} {what}")
    return lines
