"""The market-data watchdog on the simulated market, in virtual time (nothing sleeps: the tests drive the clock).

A symbol with live trades whose quotes stop is resubscribed after ``watchdog.stale_tick_s``, reported blind after
as long again (its trades only), and cleared when quotes come back; outside the regular session nothing is raised.
"""

from __future__ import annotations

import asyncio
import logging

from rich.console import Console

from tickguard.adapters.sim.broker import SimBroker
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Side
from tickguard.core.trades import Trade, TradeRequest
from tickguard.interfaces import journal_view, live_view
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import sim_engine
from tickguard.store.journal import Journal

NS = 1_000_000_000
ACCOUNT = "DU1000"


def req(symbol: str, side: Side = Side.LONG) -> TradeRequest:
    # a stop far away: the trades stay open for the whole test
    return TradeRequest(symbol=symbol, side=side, qty=100, account=ACCOUNT, rules=[StopLoss(distance=20.0)])


async def engine_with_trades(start: str, journal: Journal | None = None) -> tuple[Engine, SimBroker, list[Trade]]:
    s = load(None, {"sim": {"speed": 0, "symbols": 3, "seed": 5, "start": start},
                    "volatility": {"intraday": False}})
    engine, venue = sim_engine(s, journal=journal)
    await engine.start(sorted(venue.specs))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)  # first quotes
    trades = [engine.submit(req("SIM001")), engine.submit(req("SIM001", Side.SHORT)), engine.submit(req("SIM002"))]
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    assert [t.state.value for t in trades] == ["open"] * 3
    return engine, engine.broker, trades  # type: ignore[return-value]


async def test_a_silent_symbol_is_resubscribed_then_its_trades_reported_blind_then_cleared(tmp_path, caplog):
    journal = Journal.open(str(tmp_path / "j.db"))
    engine, broker, (a1, a2, b1) = await engine_with_trades("2026-11-23T10:00:00-05:00", journal)
    caplog.set_level(logging.INFO, logger="tickguard.runtime.watchdog")
    muted_at = broker.now_ns()
    broker.mute_feed(["SIM001"])  # a farm outage for SIM001 only: SIM002 keeps ticking, the venue keeps trading

    await engine.run_until(muted_at + 9 * NS)
    assert broker.resubscribed == [] and engine.health.alerts == []  # not yet: 10 s threshold

    await engine.run_until(muted_at + 12 * NS)
    assert [s for _, s in engine.health.resubscribed] == ["SIM001"]  # first: resubscribe
    await asyncio.sleep(0)  # the engine renews it in the background (its loop never waits on the broker)
    assert [s for _, s in broker.resubscribed] == ["SIM001"]
    assert engine.health.alerts == [] and engine.health.blind == {}

    await engine.run_until(muted_at + 25 * NS)
    [alert] = engine.health.alerts
    assert alert.symbol == "SIM001" and set(alert.trade_ids) == {a1.id, a2.id}  # SIM001's trades, not b1
    assert set(engine.health.blind) == {"SIM001"} and alert.cleared_ns is None
    assert 19 * NS <= alert.raised_ns - muted_at <= 22 * NS  # resubscribe at ~10 s, alert ~10 s later
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    text = line.getMessage()
    assert "SIM001" in text and a1.id in text and a2.id in text and b1.id not in text and "muted: SIM001" in text

    await engine.run_until(muted_at + 60 * NS)
    assert len(engine.health.alerts) == 1 and [s for _, s in broker.resubscribed] == ["SIM001"]  # once per episode

    view = Console(record=True, width=250)
    view.print(live_view.blind_line(engine))
    view.print(live_view.trades_table(engine))
    shown = view.export_text()
    assert f"BLIND: SIM001 60s ({a1.id}, {a2.id})" in shown and shown.count("blind 60s") == 2  # SIM001's rows

    broker.restore_feed()
    await engine.run_until(broker.now_ns() + 3 * NS)
    assert engine.health.blind == {} and alert.cleared_ns is not None and alert.cleared_why == "ticks resumed"
    assert any("sighted again" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)

    journal.close()
    rows = journal_view.select(str(tmp_path / "j.db"))
    kinds = {t["trade_id"]: [e["kind"] for e in t["events"] if e["kind"] in ("blind", "sighted")] for t in rows}
    assert kinds == {a1.id: ["blind", "sighted"], a2.id: ["blind", "sighted"], b1.id: []}
    out = Console(record=True, width=250)
    journal_view.render(rows, out)
    printed = out.export_text()
    assert f"{a1.id} SIM001" in printed and "BLIND: no valid tick for 20" in printed and "sighted again" in printed


async def test_a_symbol_silent_outside_trading_hours_raises_nothing(caplog):
    """From 15:59 the sim's session closes at 16:00 and its quotes stop: live trades, silent feed, no alert."""
    engine, broker, trades = await engine_with_trades("2026-11-23T15:59:00-05:00")
    caplog.set_level(logging.WARNING, logger="tickguard.runtime.watchdog")
    await engine.run_until(broker.now_ns() + 600 * NS)  # to 16:09, ten minutes of silence
    assert all(t.state.value == "open" for t in trades)
    assert engine.ticks.quote("SIM001").recv_ns < broker.now_ns() - 500 * NS  # the feed really is silent
    assert broker.resubscribed == [] and engine.health.alerts == [] and engine.health.blind == {}
    assert [r for r in caplog.records if r.name == "tickguard.runtime.watchdog"] == []


async def test_no_alert_while_the_symbol_ticks():
    engine, broker, _ = await engine_with_trades("2026-11-23T10:00:00-05:00")
    await engine.run_until(broker.now_ns() + 120 * NS)
    assert broker.resubscribed == [] and engine.health.alerts == []


async def test_the_loop_wakes_for_the_watchdog_when_every_feed_is_silent():
    """Nothing arrives at all (every symbol muted): only the watchdog's own deadline can wake the loop on time."""
    engine, broker, (a1, a2, b1) = await engine_with_trades("2026-11-23T10:00:00-05:00")
    muted_at = broker.now_ns()
    broker.mute_feed(["SIM001", "SIM002", "SIM003"])
    last = {s: engine.ticks.quote(s).recv_ns for s in ("SIM001", "SIM002")}  # silence starts at the last tick
    await engine.run_until(muted_at + 40 * NS)  # one call: the engine must wake by itself at the thresholds
    assert sorted(s for _, s in engine.health.resubscribed) == ["SIM001", "SIM002"]  # SIM003 has no trade
    assert all(when - last[s] == 10 * NS for when, s in engine.health.resubscribed)  # at the threshold, exactly
    assert {a.symbol: set(a.trade_ids) for a in engine.health.alerts} == {"SIM001": {a1.id, a2.id},
                                                                           "SIM002": {b1.id}}
    assert all(a.raised_ns - last[a.symbol] == 20 * NS and a.since_ns == last[a.symbol] for a in engine.health.alerts)
