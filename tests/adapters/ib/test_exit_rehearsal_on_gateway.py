"""The exit rehearsal over ib_async and the fake gateway: it builds IB's order and sends nothing, takes no order id.

runtime/exit_rehearsal.py runs an exit's code every millisecond next to the real connection; the adapter's part
(``IBBroker.rehearse_order``) makes ib_async's ``Order`` as ``place_order`` does.  Checked here from the gateway's
side: no order reaches it and ib_async's next order id is the one it was - and from the engine's: the rehearsals
ran on the event loop while the engine ran, never inside a step, and the journal and its exit log hold nothing of
them.  Then a crossing sends the rehearsed exit, once, under the rehearsed key.
"""

from __future__ import annotations

import asyncio
import sqlite3

from ib_engine_support import ACCOUNT, engine_on_gateway, until

from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Side, Tick
from tickguard.core.trades import TradeRequest


async def test_rehearsals_send_nothing_take_no_order_id_and_run_between_steps_then_the_exit_goes_once(tmp_path):
    path = tmp_path / "j.db"
    settings = {"journal": {"path": str(path)}, "shadow": {"enabled": False}, "engine": {"exit_rehearsal_ms": 1}}
    async with engine_on_gateway(["AAA", "BBB"], client_id=33, settings=settings) as run:
        engine, gw, broker = run.engine, run.gw, run.broker
        trades = [engine.submit(TradeRequest(symbol=symbol, side=Side.LONG, qty=10, account=ACCOUNT,
                                             rules=[StopLoss(distance=20)])) for symbol in ("AAA", "BBB")]
        await until(lambda: all(t.state.value == "open" for t in trades), gw)
        rehearsal, journal = engine.rehearsal, engine.journal
        assert rehearsal is not None and journal is not None and journal._exits is not None
        stepping, inside, rehearsed = [False], [], []
        step, rehearse = engine.step, rehearsal.run

        def watched_step(events):
            stepping[0] = True
            try:
                step(events)
            finally:
                stepping[0] = False

        def watched_run():
            inside.append(stepping[0])
            intent = rehearse()
            rehearsed.append(intent)
            return intent

        engine.step = watched_step  # type: ignore[method-assign]
        rehearsal.run = watched_run  # type: ignore[method-assign]
        orders, next_id = set(gw.book.orders), broker.ib.client._reqIdSeq
        logged, sent = journal._exits.log.records, dict(engine.executor.orders)
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT count(*) FROM orders").fetchone()[0]
        await until(lambda: len(rehearsed) >= 30, gw, step=0.05)  # quotes keep coming: steps and rehearsals mix
        assert set(gw.book.orders) == orders and broker.ib.client._reqIdSeq == next_id
        assert journal._exits.log.records == logged and engine.executor.orders == sent
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == rows
        assert not any(inside), "a rehearsal ran inside an engine step"
        keys = {i.key for i in rehearsed if i is not None}
        assert keys == {f"tg:{engine.instance_id}:{t.id}:stop:1" for t in trades}  # every symbol's, by turns
        assert rehearsal.failures == 0 and broker.quote_age_s() < 1

        trade = trades[0]
        grid, stop = engine.grid(trade.symbol), engine.trades.stop_price(trade)
        bid = grid.units(float(stop)) - 1
        now = broker.now_ns()
        engine.step([Tick(trade.symbol, bid, bid + 2, 0, 100.0, now, now, 10_000_000)])
        key = f"tg:{engine.instance_id}:{trade.id}:stop:1"
        await until(lambda: [o.request.order_ref for o in gw.book.orders.values()].count(key) == 1, gw)
        assert broker.ib.client._reqIdSeq == next_id + 1  # the exit's id, the first taken since


async def test_the_adapters_signals_to_the_rehearsal_and_no_encoding_without_a_connection(tmp_path):
    """``quote_age_s`` grows while no quote comes (a closed market: no rehearsal past a second), infinite before the
    first; ``has_events`` says events wait for the engine; ``rehearse_order`` encodes nothing once the connection is
    down (the silent client keeps no message)."""
    from decimal import Decimal

    from tickguard.adapters.broker import BrokerOrder
    from tickguard.adapters.ib.ib_client import IBBroker
    from tickguard.config import load
    from tickguard.core.model import Action, OrderType

    assert IBBroker(load(None, {}).ib).quote_age_s() == float("inf")
    async with engine_on_gateway(["AAA"], client_id=34, settings={"shadow": {"enabled": False},
                                                                 "engine": {"exit_rehearsal_ms": 0}}) as run:
        broker = run.broker
        young = broker.quote_age_s()  # the gateway's clock stands still: no quote comes now
        await asyncio.sleep(0.05)
        assert broker.quote_age_s() >= young + 0.04
        assert not broker.has_events()
        broker._events.append(run.engine.ticks.quote("AAA"))  # as _on_tickers hands a quote over
        assert broker.has_events()
        broker._events.clear()
        order = BrokerOrder(ref="tg:x:T1:stop:1", account=ACCOUNT, symbol="AAA", action=Action.SELL, qty=Decimal(10),
                            order_type=OrderType.MARKET, limit_price=None)
        broker.rehearse_order(order)
        assert broker._silent is not None and broker._silent.last is not None  # encoded while connected
        broker._silent.last = None
        broker.state.connected = False  # the connection is down (as a drop leaves it, before the reconnect)
        broker.rehearse_order(order)
        assert broker._silent.last is None
        broker.state.connected = True
