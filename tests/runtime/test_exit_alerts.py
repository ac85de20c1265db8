"""A refused exit raises an alert at once and is retried by the policy until the position is flat (engine on the
simulated exchange, which refuses the first exit as a broker would)."""

from __future__ import annotations

import logging
from decimal import Decimal

from test_recovery import ACCOUNT, NS, settings, started

from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Side
from tickguard.core.trades import TradeRequest


async def test_a_refused_exit_alerts_at_once_and_is_retried_until_flat(tmp_path, caplog):
    s = settings(str(tmp_path / "j.db"))
    engine = await started(s)
    sym = sorted(engine.venue.specs)[0]
    venue = engine.venue
    bid = Decimal(str(venue.last_ticks[sym].bid))
    trade = engine.submit(TradeRequest(symbol=sym, side=Side.LONG, qty=100, account=ACCOUNT,
                                       rules=[StopLoss(price=float(bid - Decimal("0.01")))]))
    while trade.state.value != "open":
        await engine.run_until(engine.broker.now_ns() + NS // 10)
    venue.exchange.reject_next = "price outside the exchange's band"  # the exit, whenever it goes
    with caplog.at_level(logging.ERROR, logger="tickguard.runtime.engine"):
        while not engine.exit_alerts:
            await engine.run_until(engine.broker.now_ns() + NS)
    [alert] = engine.exit_alerts
    assert alert.trade_id == trade.id and alert.status == "rejected" and "band" in alert.reason
    assert any("EXIT REFUSED" in r.getMessage() and trade.id in r.getMessage() for r in caplog.records)
    await engine.run_until(engine.broker.now_ns() + 10 * NS)
    assert trade.state.value == "closed" and venue.positions(ACCOUNT).get(sym, 0.0) == 0.0
    keys = [o["order_key"] for o in engine.journal.orders_of([trade.id])]
    assert [k.rsplit(":", 2)[-2:] for k in keys if ":stop:" in k] == [["stop", "1"], ["stop", "2"]]
    events = [e["event"] for e in trade.history]
    assert "exit_failed" in events and events[-1] == "state"
