"""``tickguard run``: the engine on a real TWS / IB Gateway connection (or the fake gateway)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tickguard.config import Settings
from tickguard.core.trade_checks import TradeRejected
from tickguard.interfaces.metrics_http import serving_metrics
from tickguard.interfaces.stopping import run_until_stopped
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import ib_engine, open_journal

log = logging.getLogger(__name__)


async def run_ib(
    settings: Settings,
    duration_s: float | None = None,
    watcher: Callable[[Engine], Awaitable[None]] | None = None,
) -> Engine:
    journal = open_journal(settings, kind="live")
    try:
        engine = ib_engine(settings, journal=journal)
    except BaseException:
        if journal is not None:  # its lock with it: nothing runs on it
            journal.close()
        raise
    cfg = settings.ib
    symbols = sorted({t.symbol for t in settings.trades} | {s.upper() for s in cfg.symbols})
    async with serving_metrics(engine, settings.metrics):  # GET /metrics while it runs (metrics_http.py)
        try:
            failed = await engine.start(symbols, attempts=cfg.qualify_attempts)  # it logs what it recovered
            if failed:
                log.error("NOT READY: connected to %s:%s but cannot trade %s", cfg.host, cfg.port,
                          "; ".join(f"{s} ({why})" for s, why in sorted(failed.items())))
            else:
                log.info("connected to %s:%s as client %s; ready to trade %d symbol(s): %s", cfg.host, cfg.port,
                         cfg.client_id, len(engine.contracts), ", ".join(sorted(engine.contracts)))
            silent = await engine.warm_up(sorted(engine.contracts), cfg.first_quote_timeout_s)
            if silent:
                log.warning("no quote yet for %s after %gs; their market entries will be refused", ", ".join(silent),
                            cfg.first_quote_timeout_s)
            for request in settings.trades:
                if request.ref is not None and engine.trades.knows_ref(request.user, request.ref):
                    continue  # already opened by an earlier run of this config
                try:
                    trade = engine.submit(request)
                    log.info("trade %s accepted: %s %s %s (ref %s)", trade.id, request.side.value, f"{request.qty:g}",
                             request.symbol, request.ref)
                except TradeRejected as exc:
                    log.error("trade refused: %s", exc)
            end = None if duration_s is None else engine.broker.now_ns() + int(duration_s * 1e9)
            watch = asyncio.create_task(watcher(engine)) if watcher else None
            try:
                stopped = await run_until_stopped(engine.run_until(end if end is not None else 2**62))
            finally:
                if watch is not None:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
            report_unguarded(engine, "stopped by a signal" if stopped else "the run's duration ended")
        finally:
            if engine.shadow is not None:
                engine.shadow.cancel()  # its what-ifs in flight die with the connection
            await engine.broker.close()
            if journal is not None:
                journal.close()
    return engine


def report_unguarded(engine: Engine, why: str) -> None:
    """The engine is about to stop watching: say which trades are open and unguarded from now on, and what still
    protects each (exit orders working at the broker), and journal the stop."""
    live = [t for t in engine.trades.live_trades() if t.open_qty > 0 or t.entry_working]
    now = engine.broker.now_ns()
    (log.warning if live else log.info)("tickguard stopped (%s): %d trade(s) open and no longer watched", why,
                                        len(live))
    for trade in live:
        working = [r.intent.key for r in engine.executor.orders.values()
                   if r.intent.trade_id == trade.id and r.intent.is_exit and not r.final]
        stop = engine.trades.stop_price(trade)
        guard = (f"exit order(s) working at the broker: {', '.join(working)}" if working
                 else "NOTHING at the broker protects it")
        log.warning("UNGUARDED %s %s %s %s%s; %s", trade.id, trade.side.value, trade.open_qty, trade.symbol,
                    f" (its stop {stop} is no longer watched)" if stop is not None else "", guard)
    if engine.journal is not None:
        with engine.journal.batch():
            engine.journal.event("engine_stopped", now, {"why": why, "unguarded": [t.id for t in live]})
