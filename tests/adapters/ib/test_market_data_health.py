"""Market-data health through the real ib_async client against the fake gateway: IB's farm and connectivity codes
tracked per farm, and the engine's watchdog catching a farm outage that silences one symbol.

The adapter runs on the gateway's virtual clock (``IBBroker(clock=...)``) and the test drives that clock, so the
watchdog's thresholds pass in virtual seconds and nothing sleeps for them; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ib_engine_support import engine_on_gateway as shared_engine_on_gateway
from ib_engine_support import until as shared_until

from ibfake.server import FakeGateway
from tickguard.adapters.ib.farms import FarmTable, farm_name
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Side
from tickguard.core.trades import TradeRequest
from tickguard.runtime.engine import Engine

ACCOUNT = "DU0000001"
NS = 1_000_000_000
ALLOWED = ("Error 1100", "Error 1101", "Error 1102", "Error 2103", "Error 2104", "Error 2105", "Error 2106",
           "Error 2107", "Error 2108", "Error 2157", "Error 2158")


async def until(pred: Callable[[], Any], gw: FakeGateway, step: float = 0.25, timeout: float = 20.0) -> None:
    """Advance the gateway's virtual time in steps until ``pred()`` holds (bounded in wall time)."""
    await shared_until(pred, gw, step, timeout)


@contextlib.asynccontextmanager
async def engine_on_gateway(**watchdog: Any) -> AsyncIterator[tuple[FakeGateway, Engine, IBBroker]]:
    settings = {"watchdog": {"stale_tick_s": 10.0, **watchdog}, "volatility": {"intraday": False}}
    async with shared_engine_on_gateway(["AAA", "BBB"], client_id=31, allowed=ALLOWED, settings=settings,
                                        virtual_clock=True) as run:  # the engine sees the gateway's virtual time
        assert run.failed == {}
        yield run.gw, run.engine, run.broker


def req(symbol: str, side: Side = Side.LONG) -> TradeRequest:
    return TradeRequest(symbol=symbol, side=side, qty=100, account=ACCOUNT, rules=[StopLoss(distance=5.0)])


def subscriptions(gw: FakeGateway, symbol: str) -> set[int]:
    return {req_id for s in gw.sessions for req_id, sym in s.mkt_subs.items() if sym == symbol}


async def test_a_farm_outage_on_one_symbol_resubscribes_then_reports_exactly_its_trades_blind(caplog):
    async with engine_on_gateway() as (gw, engine, broker):
        caplog.set_level(logging.INFO, logger="tickguard.runtime.watchdog")
        a1, a2, b1 = engine.submit(req("AAA")), engine.submit(req("AAA", Side.SHORT)), engine.submit(req("BBB"))
        await until(lambda: all(t.state.value == "open" for t in (a1, a2, b1)), gw)
        subs_before = subscriptions(gw, "AAA")

        gw.farm_outage(["AAA"])  # 2103 "...broken:usfarm"; AAA's quotes stop, BBB's flow, the venue trades on
        muted_at = gw.now_ns  # the watchdog counts from AAA's last tick, at most a quote's gap before this
        await until(lambda: not broker.state.farm_ok, gw)
        assert broker.farms.snapshot()["usfarm"][0] == "broken"

        await until(lambda: engine.health.resubscribed, gw)
        assert [s for _, s in engine.health.resubscribed] == ["AAA"] and engine.health.alerts == []
        assert 9 * NS <= engine.health.resubscribed[0][0] - muted_at <= 11 * NS
        await until(lambda: subscriptions(gw, "AAA") - subs_before, gw)  # a new reqMktData reached the gateway

        await until(lambda: engine.health.alerts, gw)
        [alert] = engine.health.alerts
        assert alert.symbol == "AAA" and set(alert.trade_ids) == {a1.id, a2.id}  # not BBB's trade
        assert set(engine.health.blind) == {"AAA"}
        assert 19 * NS <= alert.raised_ns - muted_at <= 21.5 * NS
        assert "usfarm (market data) broken" in alert.feed
        [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "BLIND" in r.getMessage()]
        assert "AAA" in line and a1.id in line and a2.id in line and b1.id not in line and "usfarm" in line

        await gw.advance(15.0)
        await until(lambda: True, gw)
        assert len(engine.health.alerts) == 1  # once per episode
        assert b1.state.value == "open" and "BBB" not in engine.health.blind

        gw.farm_restored()  # 2104; quotes resume
        await until(lambda: not engine.health.blind, gw)
        assert alert.cleared_ns is not None and alert.cleared_why == "ticks resumed"
        assert broker.state.farm_ok and broker.farms.snapshot()["usfarm"][0] == "ok"
        assert any("sighted again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


async def test_farm_and_connectivity_codes_are_tracked_per_farm():
    async with engine_on_gateway() as (gw, _engine, broker):
        t0 = gw.now_ns
        for code in (2104, 2106, 2158):  # what TWS says at connect
            gw.send_system_message(code)
        await until(lambda: len(broker.farms.farms) == 3, gw)
        assert {f: s for f, (s, _) in broker.farms.snapshot().items()} == {
            "usfarm": "ok", "ushmds": "ok", "secdefnj": "ok"}

        gw.send_system_message(2103, "Market data farm connection is broken:usfarm.nj")
        gw.send_system_message(2105)
        gw.send_system_message(2157, "Sec-def data farm connection is broken:secdefnj")
        await until(lambda: broker.farms.snapshot().get("secdefnj", ("",))[0] == "broken", gw)
        snap = broker.farms.snapshot()
        assert snap["usfarm.nj"][0] == "broken" and snap["usfarm"][0] == "ok"  # two market-data farms apart
        assert snap["ushmds"][0] == "broken" and snap["usfarm.nj"][1] > t0
        assert not broker.state.farm_ok and broker.state.broken_farms == {"usfarm.nj"}  # HMDS is no quote farm
        assert "usfarm.nj (market data) broken for" in broker.feed_state()

        gw.send_system_message(2108, "Market data farm connection is inactive but should be available upon "
                                     "demand.usfarm.nj")
        gw.send_system_message(2107)
        gw.send_system_message(1100)
        await until(lambda: not broker.farms.connected, gw)
        snap = broker.farms.snapshot()
        assert snap["usfarm.nj"][0] == "inactive" and snap["ushmds"][0] == "inactive"
        assert broker.state.farm_ok  # inactive is IB parking an idle farm, not an outage
        assert "IB connectivity LOST" in broker.feed_state()
        gw.send_system_message(1102)
        await until(lambda: broker.farms.connected, gw)
        assert broker.feed_state().startswith("IB connectivity ok")


def test_farm_table_reads_the_farm_from_the_message():
    assert farm_name("Market data farm connection is broken:usfarm", "market data") == "usfarm"
    assert farm_name("Market data farm connection is OK:usfarm.nj", "market data") == "usfarm.nj"
    assert farm_name("HMDS data farm connection is inactive but should be available upon demand.ushmds",
                     "HMDS") == "ushmds"
    assert farm_name("", "market data") == "market data farm"
    table = FarmTable()
    table.on_code(2103, "Market data farm connection is broken:cashfarm", 5)
    table.on_code(2103, "Market data farm connection is broken:cashfarm", 9)  # repeated: still broken since 5
    assert table.snapshot() == {"cashfarm": ("broken", 5)} and table.broken() == ["cashfarm"]
    table.on_code(2104, "Market data farm connection is OK:cashfarm", 12)
    assert table.snapshot() == {"cashfarm": ("ok", 12)} and table.broken() == []
    assert table.on_code(201, "Order rejected", 13) is None and list(table.farms) == ["cashfarm"]
