"""``tickguard trades``: the journal's trades, legs, orders and events, for people and scripts."""

from __future__ import annotations

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
            "side": row["side"], "qty": row["qty"], "state": row["state"],
            "entry_filled": snap.get("entry_filled"), "entry_avg": snap.get("entry_avg"),
            "exited": snap.get("exited"), "realized": snap.get("realized"), "close_reason": snap.get("close_reason"),
            "legs": [{k: v for k, v in leg.items() if k != "trade_id"} for leg in legs if leg["trade_id"] == tid],
            "request": row["request"],
            "orders": [{k: o[k] for k in ("order_key", "leg", "action", "qty", "status", "attempts",
                                         "broker_order_id", "filled", "avg_price", "commission", "reason")}
                       for o in orders if o["trade_id"] == tid],
            "fills": [{k: f[k] for k in ("exec_id", "order_key", "qty", "price", "commission", "ts_ns")}
                      for f in fills if f["trade_id"] == tid],
            "events": [{"seq": e["seq"], "ts_ns": e["ts_ns"], "kind": e["kind"], "data": e["data"]}
                       for e in events if e["trade_id"] == tid],
        })
    return out


def render(data: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"{len(data)} trade(s)")
    for col in ("trade", "user", "account", "symbol", "side", "qty", "state", "entry", "exited", "realized",
                "close", "legs", "orders"):
        table.add_column(col)
    for t in data:
        orders = ", ".join(f"{o['leg']}:{o['status']}" for o in t["orders"])
        entry = f"{t['entry_filled'] or 0:g}@{t['entry_avg'] or 0:.2f}"
        table.add_row(t["trade_id"], t["user"], t["account"], t["symbol"], t["side"], f"{t['qty']:g}", t["state"],
                      entry, f"{t['exited'] or 0:g}", f"{t['realized'] or 0:,.2f}", t["close_reason"] or "",
                      " ".join(f"{leg['name']}@{leg['level']:.2f}" if leg["level"] is not None else leg["name"]
                               for leg in t["legs"]), orders)
    console.print(table)
