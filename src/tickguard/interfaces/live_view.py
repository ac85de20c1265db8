"""The terminal view of ``tickguard sim``: trades, levels, distance to stop, P&L, and exits as they happen."""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from tickguard.interfaces.market_time import fmt_ns
from tickguard.runtime.engine import Engine
from tickguard.runtime.entry_guard import trading_day

_STATE_STYLE = {"pending_entry": "yellow", "open": "cyan", "exiting": "magenta", "closed": "dim", "halted": "bold red",
                "rejected": "red", "cancelled": "red"}


def trades_table(engine: Engine, limit: int = 40) -> Table:
    tm = engine.trades
    table = Table(expand=True, show_edge=False, pad_edge=False)
    for col, justify in (("trade", "left"), ("user", "left"), ("symbol", "left"), ("side", "left"),
                         ("open", "right"), ("state", "left"), ("entry", "right"), ("bid/ask", "right"),
                         ("stop", "right"), ("targets", "right"), ("dist (ATR)", "right"),
                         ("P&L", "right"), ("exit", "left")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    trades = sorted(tm.trades.values(), key=lambda t: (t.state.is_final, tm.distance_to_stop(t)))
    now = engine.broker.now_ns()
    for trade in trades[:limit]:
        tick = engine.ticks.quote(trade.symbol)
        blind = engine.health.blind.get(trade.symbol) if not trade.state.is_final else None
        grid = tm.grid(trade.symbol)
        mark = None if tick is None else grid.price(tick.bid if trade.sign > 0 else tick.ask)
        dist = tm.distance_to_stop(trade)
        pnl = trade.realized + trade.unrealized(mark) - trade.commissions
        targets = " ".join(str(grid.price(trade.sign * leg.level_x)) for leg in trade.targets
                           if leg.level_x is not None and leg.level_id in tm.book)
        table.add_row(
            trade.id, trade.request.user, trade.symbol, trade.side.value, f"{trade.open_qty:g}",
            f"[{_STATE_STYLE[trade.state.value]}]{trade.state.value}[/]",
            f"{trade.entry_avg:.{grid.decimals}f}" if trade.entry_filled else "-",
            (f"[bold red]blind {(now - blind) / 1e9:.0f}s[/]" if blind is not None
             else f"{grid.price(tick.bid)}/{grid.price(tick.ask)}" if tick else "-"),
            str(stop) if (stop := tm.stop_price(trade)) is not None else "-",
            targets or "-",
            f"[{'red' if dist < 0.3 else 'yellow' if dist < 1 else 'green'}]{dist:.2f}[/]"
            if math.isfinite(dist) else "-",
            f"[{'green' if pnl >= 0 else 'red'}]{pnl:,.2f}[/]",
            trade.close_reason or "",
        )
    return table


def _header(engine: Engine, wall0: float, ticks0: int) -> str:
    now = engine.broker.now_ns()
    c = engine.ticks.counters
    rate = (c.accepted - ticks0) / max(1e-9, time.monotonic() - wall0)
    return (f"virtual time [bold]{fmt_ns(now)}[/]   ticks {c.accepted:,} ({rate:,.0f}/s wall)   "
            f"dropped {c.dropped_total:,}   orders {len(engine.executor.orders)}   "
            f"batches {engine.ticks.stats.batches:,}")


def blind_line(engine: Engine) -> str:
    """The watchdog's standing alerts: "BLIND: AAA 23s (T00001, T00004)", or "" when every feed is alive."""
    now = engine.broker.now_ns()
    alerts = engine.health.active()
    if not alerts:
        return ""
    parts = [f"{a.symbol} {a.silent_s(now):.0f}s ({', '.join(a.trade_ids)})" for a in alerts]
    return "[bold red]BLIND: " + "; ".join(parts) + "[/]"


LANE_NAMES = {0: "stop exits", 1: "exits", 2: "cancels", 3: "entries", 4: "what-ifs", 5: "data"}


def budget_line(engine: Engine) -> str:
    """The message budget (core/message_budget.py): what waits per lane, what went, what was refused, the longest
    wait - "messages: 812 sent, waiting 188 stop exits, 100 entries; refused 4 entries; longest wait 1.92 s"."""
    stats = engine.budget.throttle.stats()
    waiting = ", ".join(f"{n} {LANE_NAMES[lane]}" for lane, n in stats.depth.items() if n)
    refused = ", ".join(f"{n} {LANE_NAMES[lane]}" for lane, n in stats.refused.items() if n)
    longest = max(stats.wait_ns_max.values(), default=0) / 1e9
    today = engine.guard.efficiency.today(trading_day(engine.broker.now_ns()))
    ratios = ", ".join(f"{account or 'default'} {c.ratio:.1f}" if c.ratio is not None else f"{account or 'default'} -"
                       for account, c in sorted(today.items()))
    breaker, now = engine.guard.breaker, engine.broker.now_ns()
    paused = [a or "default" for a in breaker.trips if breaker.paused(a, now)]
    return (f"messages: {sum(stats.sent.values()):,} sent" + (f", waiting {waiting}" if waiting else "")
            + (f"; [red]refused {refused}[/]" if refused else "") + f"; longest wait {longest:.2f} s"
            + (f"; orders per execution today: {ratios}" if ratios else "")
            + (f"; [bold red]entries paused: {', '.join(paused)}[/]" if paused else ""))


def _exits_panel(engine: Engine, n: int = 8) -> Panel:
    lines: list[tuple[int, str]] = []
    for trade in engine.trades.trades.values():
        for ev in trade.history:
            if ev["event"] in ("exit_intent", "exit_fill", "entry_fill", "rejected", "exit_failed"):
                lines.append((ev["ts_ns"], _describe(trade.id, trade.symbol, ev)))
    lines.sort()
    return Panel("\n".join(text for _, text in lines[-n:]) or "no fills yet", title="latest", height=n + 2)


def _describe(tid: str, symbol: str, ev: dict[str, Any]) -> str:
    when = fmt_ns(ev["ts_ns"]).split(" ")[-1]
    kind = ev["event"]
    if kind == "exit_intent":
        trig = ev.get("trigger") or {}
        price = trig.get("price")
        at = f" at {price:.2f}" if isinstance(price, float) and math.isfinite(price) else ""
        return f"{when} [magenta]EXIT[/] {tid} {symbol} {ev['leg']} {ev['qty']:g} ({trig.get('rule')}{at})"
    if kind == "exit_fill":
        return f"{when} [green]exit fill[/] {tid} {symbol} {ev['qty']:g} @ {ev['price']:.2f}"
    if kind == "entry_fill":
        return f"{when} [cyan]entry fill[/] {tid} {symbol} {ev['qty']:g} @ {ev['price']:.2f}"
    return f"{when} [red]{kind}[/] {tid} {symbol} {ev.get('reason', '')}"


async def watch(engine: Engine, console: Console, refresh_hz: float = 4.0) -> None:
    """Redraw the view until cancelled."""
    wall0 = time.monotonic()
    ticks0 = engine.ticks.counters.accepted
    with Live(console=console, refresh_per_second=refresh_hz, transient=False) as live:
        while True:
            header = f"{_header(engine, wall0, ticks0)}\n{budget_line(engine)}"
            blind = blind_line(engine)
            live.update(Group(f"{header}\n{blind}" if blind else header, trades_table(engine), _exits_panel(engine)))
            await asyncio.sleep(1.0 / refresh_hz)


def summary_table(report: dict[str, Any]) -> Table:
    s = report["summary"]
    table = Table(title="tickguard sim - summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("seed", str(report["meta"]["seed"]))
    table.add_row("virtual time", f"{report['meta']['duration_s']:g} s from {report['meta']['start']}")
    table.add_row("trades", str(s["trades"]))
    for state, n in sorted(s["states"].items()):
        table.add_row(f"  {state}", str(n))
    for rule, n in sorted(s["exits_by_rule"].items()):
        table.add_row(f"exits: {rule}", str(n))
    table.add_row("orders", str(s["orders"]))
    table.add_row("realized P&L", f"{Decimal(s['realized']):,.2f}")
    table.add_row("commissions", f"{Decimal(s['commissions']):,.2f}")
    table.add_row("ticks processed", f"{s['ticks_accepted']:,}")
    table.add_row("ticks dropped", ", ".join(f"{k}: {v}" for k, v in s["ticks_dropped"].items()) or "0")
    for r in s["rejected_requests"]:
        table.add_row("refused trade", f"{r['symbol']}: {r['reason']}")
    return table
