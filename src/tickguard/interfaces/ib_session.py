"""``tickguard run``: the engine on a real TWS / IB Gateway connection (or the fake gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TextIO

from tickguard.config import Settings
from tickguard.core.trade_checks import TradeRejected
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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        end = None if duration_s is None else engine.broker.now_ns() + int(duration_s * 1e9)
        watch = asyncio.create_task(watcher(engine)) if watcher else None
        runner = asyncio.create_task(engine.run_until(end if end is not None else 2**62))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (runner, stopper, watch):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(runner, stopper, *( [watch] if watch else []), return_exceptions=True)
        if runner.done() and not runner.cancelled() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]
    finally:
        await engine.broker.close()
        if journal is not None:
            journal.close()
    return engine
