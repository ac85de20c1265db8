"""``tickguard run``: the engine on a real TWS / IB Gateway connection (or the fake gateway)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TextIO

from tickguard.config import Settings
from tickguard.core.trade_checks import TradeRejected
from tickguard.interfaces.stopping import run_until_stopped
from tickguard.runtime.engine import Engine, ib_engine, open_journal

log = logging.getLogger("tickguard.run")


async def run_ib(
    settings: Settings,
    out: TextIO,
    duration_s: float | None = None,
    watcher: Callable[[Engine], Awaitable[None]] | None = None,
) -> Engine:
    journal = open_journal(settings, kind="live")
    engine = ib_engine(settings, journal=journal)
    cfg = settings.ib
    symbols = sorted({t.symbol for t in settings.trades} | {s.upper() for s in cfg.symbols})
    try:
        failed = await engine.start(symbols, attempts=cfg.qualify_attempts)
        if engine.recovery is not None:
            for line in engine.recovery.lines():
                print(line, file=out, flush=True)
        if failed:
            print(f"NOT READY: connected to {cfg.host}:{cfg.port} but cannot trade "
                  + "; ".join(f"{s} ({why})" for s, why in sorted(failed.items())), file=out, flush=True)
        else:
            print(f"connected to {cfg.host}:{cfg.port} as client {cfg.client_id}; ready to trade "
                  f"{len(engine.contracts)} symbol(s): {', '.join(sorted(engine.contracts))}", file=out, flush=True)
        silent = await engine.warm_up(sorted(engine.contracts), cfg.first_quote_timeout_s)
        if silent:
            print(f"WARNING: no quote yet for {', '.join(silent)} after {cfg.first_quote_timeout_s:g}s; "
                  "their market entries will be refused", file=out, flush=True)
        for request in settings.trades:
            if request.ref is not None and engine.trades.knows_ref(request.user, request.ref):
                continue  # already opened by an earlier run of this config
            try:
                trade = engine.submit(request)
                print(f"trade {trade.id} accepted: {request.side.value} {request.qty:g} {request.symbol}",
                      file=out, flush=True)
            except TradeRejected as exc:
                print(f"trade refused: {exc}", file=out, flush=True)
        end = None if duration_s is None else engine.broker.now_ns() + int(duration_s * 1e9)
        watch = asyncio.create_task(watcher(engine)) if watcher else None
        try:
            stopped = await run_until_stopped(engine.run_until(end if end is not None else 2**62))
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
        report_unguarded(engine, out, "stopped by a signal" if stopped else "the run's duration ended")
    finally:
        await engine.broker.close()
        if journal is not None:
            journal.close()
    return engine


def report_unguarded(engine: Engine, out: TextIO, why: str) -> None:
    """The engine is about to stop watching: say which trades are open and unguarded from now on, and what still
    protects each (exit orders working at the broker), and journal the stop."""
    live = [t for t in engine.trades.live_trades() if t.open_qty > 0 or t.entry_working]
    now = engine.broker.now_ns()
    print(f"tickguard stopped ({why}): {len(live)} trade(s) open and no longer watched", file=out, flush=True)
    for trade in live:
        working = [r.intent.key for r in engine.executor.orders.values()
                   if r.intent.trade_id == trade.id and r.intent.is_exit and not r.final]
        stop = engine.trades.stop_price(trade)
        guard = (f"exit order(s) working at the broker: {', '.join(working)}" if working
                 else "NOTHING at the broker protects it")
        print(f"  UNGUARDED {trade.id} {trade.side.value} {trade.open_qty} {trade.symbol}"
              f"{f' (its stop {stop} is no longer watched)' if stop is not None else ''}; {guard}",
              file=out, flush=True)
    if engine.journal is not None:
        with engine.journal.batch():
            engine.journal.event("engine_stopped", now, {"why": why, "unguarded": [t.id for t in live]})
