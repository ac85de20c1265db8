"""The run report: trades, orders, fills and exits (with the tick that triggered each) as plain JSON.

It is written for people and for replay checks: with ``ticks`` included, an independent reference can
re-run every level against the recorded quotes without trusting the engine.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from tickguard.core.model import Tick
from tickguard.core.trades import Trade
from tickguard.runtime.engine import Engine


class TickRecorder:
    """Keeps every tick the engine received, in arrival order, for the report (prices in the core's grid
    units; ``build`` writes them as exact decimal prices)."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.rows: list[list[Any]] = []

    def __call__(self, tick: Tick) -> None:
        if self.keep:
            self.rows.append([tick.seq, tick.symbol, tick.ts_ns, tick.bid, tick.ask, tick.last])


def _clean(value: Any) -> Any:
    """JSON-ready: no NaN or infinities; quantities and money (exact decimals) as decimal strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _stop_level(engine: Engine, trade: Trade) -> Decimal | None:
    """The trade's effective stop as a price (its last one, for a trade that is over)."""
    stop = engine.trades.stops.effective(trade)
    return None if stop is None else engine.grid(trade.symbol).price(trade.sign * stop.level_x)


def _price_rows(engine: Engine, rows: list[list[Any]]) -> list[list[Any]]:
    """Recorded ticks with exact decimal prices (a last of 0 is "no last": None)."""
    out = []
    for seq, symbol, ts_ns, bid, ask, last in rows:
        grid = engine.grid(symbol)
        out.append([seq, symbol, ts_ns, grid.price(bid), grid.price(ask), grid.price(last) if last else None])
    return out


def build(engine: Engine, meta: dict[str, Any], recorder: TickRecorder | None) -> dict[str, Any]:
    trades = []
    exits = []
    for trade in engine.trades.trades.values():
        req = trade.request
        trades.append({
            "id": trade.id, "user": req.user, "account": req.account, "symbol": trade.symbol,
            "side": req.side.value, "qty": req.qty, "state": trade.state.value,
            "entry_filled": trade.entry_filled, "entry_avg": trade.entry_avg, "entry_ts_ns": trade.entry_ts_ns,
            "exited": trade.exited, "realized": trade.realized, "commissions": trade.commissions,
            "close_reason": trade.close_reason, "reason": trade.reason, "stop": _stop_level(engine, trade),
            "rules": [r.model_dump(mode="json") for r in req.rules],
            "legs": [{"name": leg.name, "fired": leg.fired, "filled": leg.filled,
                      "level": _stop_level(engine, trade) if leg is trade.stop
                      else None if leg.level_x is None
                      else engine.grid(trade.symbol).price(trade.sign * leg.level_x)}
                     for leg in trade.legs()],
            "history": trade.history,
        })
        for ev in trade.history:
            if ev["event"] == "exit_intent" and ev.get("trigger"):
                exits.append({"trade_id": trade.id, "leg": ev["leg"], "key": ev["key"], "qty": ev["qty"],
                              **ev["trigger"]})
    orders = []
    fills = []
    for rec in engine.executor.orders.values():
        intent = rec.intent
        orders.append({  # the intent as the journal keeps it, and what became of its order
            **intent.to_dict(), "status": rec.status.value, "attempts": rec.attempts, "filled": rec.filled,
            "avg_price": rec.avg_price, "commission": rec.commission, "reason": rec.reason, "events": rec.events,
        })
        for ev in rec.events:
            if ev["event"] == "fill":
                fills.append({"key": intent.key, "trade_id": intent.trade_id, "leg": intent.leg, **ev})
    states = Counter(t["state"] for t in trades)
    summary = {
        "trades": len(trades), "states": dict(states),
        "exits_by_rule": dict(Counter(e["rule"] for e in exits)),
        "realized": sum(t["realized"] for t in trades), "commissions": sum(t["commissions"] for t in trades),
        "ticks_accepted": engine.ticks.counters.accepted, "ticks_dropped": dict(engine.ticks.counters.dropped),
        "orders": len(orders), "duplicate_intents_refused": engine.executor.duplicates_refused,
        # a halted trade (an over-fill refused, core/halts.py) is listed by id with its evidence: left for the user
        "halted": {t["id"]: t["reason"] for t in trades if t["state"] == "halted"},
        "overfills": engine.executor.overfills,
        # executions refused: their account, symbol or side not their order's, or applied to another order already
        "foreign_fills": engine.executor.foreign_fills, "misrouted_fills": engine.executor.misrouted_fills,
        "rejected_requests": [{"symbol": r.symbol, "reason": why} for r, why in engine.stats.rejected_requests],
    }
    report = {
        "meta": meta,
        "summary": summary,
        "volatility": {s: {"atr": v.atr, "adr": v.adr} for s, v in engine.vol.items()},
        "daily_volatility": ({s: {"atr": v.atr, "adr": v.adr} for s, v in engine.refresher.daily.items()}
                             if engine.refresher is not None else None),
        "vol_updates": [list(u) for u in engine.vol_history],
        "trades": trades, "orders": orders, "fills": fills, "exits": exits,
    }
    if recorder is not None and recorder.keep:
        report["ticks"] = _price_rows(engine, recorder.rows)
    return _clean(report)


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
