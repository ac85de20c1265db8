"""LMT exits reach IB on the tick grid: through the real ib_async client, against the fake gateway's error 110.

Why: with ``exit_order_type = LMT`` the exit price is computed (touch minus/plus ``exit_limit_offset``); an
off-grid result — an offset of 0.003 on a 0.01 tick, or float noise like ``169.39000000000001`` — is refused
by IB with error 110, and the position stays open until a retry that fails the same way. The fake gateway
refuses off-grid prices exactly as IB does, so this test fails if the engine stops snapping.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

from fg_support import IbErrorCapture
from ib_engine_support import engine_on_gateway, until

from ibfake.server import FakeGateway
from tickguard.adapters.sim.market import SymbolSpec
from tickguard.core.exit_rules import StopLoss, TakeProfit
from tickguard.core.model import OrderType, Side
from tickguard.core.trades import TradeRequest
from tickguard.runtime.engine import Engine

ACCOUNT = "DU0000001"
OFFSET = 0.003  # not a whole number of ticks on either symbol
SYMBOLS = [SymbolSpec("AAA", 300_001, 123.45, 0.02), SymbolSpec("QTR", 300_002, 250.0, 0.02, min_tick=0.25)]
# Error 110 is deliberately not allowed: ib_async logs it at ERROR level for a new order.
EXPECTED_ERRORS = ("Peer closed connection", "connection", "Connection")


@contextlib.asynccontextmanager
async def lmt_engine_on_gateway() -> AsyncIterator[tuple[FakeGateway, Engine, IbErrorCapture]]:
    settings = {"engine": {"exit_order_type": "LMT", "exit_limit_offset": OFFSET}}
    async with engine_on_gateway(["AAA", "QTR"], client_id=12, allowed=EXPECTED_ERRORS,
                                 gateway={"symbols": SYMBOLS}, settings=settings) as run:
        assert not run.failed
        yield run.gw, run.engine, run.errors


async def test_lmt_exits_with_an_off_grid_offset_go_out_on_the_grid_without_error_110():
    async with lmt_engine_on_gateway() as (gw, engine, _errors):
        assert engine.contracts["QTR"].min_tick == 0.25 and engine.contracts["AAA"].min_tick == 0.01
        rules = [StopLoss(distance=0.05), TakeProfit(distance=0.05)]
        trades = [
            engine.submit(TradeRequest(symbol=s, side=side, qty=100, account=ACCOUNT, rules=rules))
            for s, side in (("AAA", Side.LONG), ("QTR", Side.SHORT))
        ]
        # stop early on a 110: without snapping the exit would be refused and retried, never closing
        await until(lambda: all(t.state.value == "closed" for t in trades) or gw.book.stats.refused_price, gw)
        assert gw.book.stats.refused_price == 0, "the gateway refused an exit price with error 110"
        assert all(t.exited == 100 for t in trades)
        exits = [o for o in gw.book.orders.values() if not o.request.order_ref.endswith(":entry")]
        assert {o.symbol for o in exits} == {"AAA", "QTR"}
        for order in exits:
            tick = Decimal(str(engine.contracts[order.symbol].min_tick))
            text = order.request.raw["lmtPrice"]  # the price as ib_async wrote it on the wire
            assert order.request.order_type == "LMT" and Decimal(text) % tick == 0, (order.symbol, text)
        sent = {r.intent.key: r.intent for r in engine.executor.orders.values()}
        for order in exits:
            intent = sent[order.request.order_ref]
            assert intent.order_type is OrderType.LIMIT and float(intent.limit_price) == order.request.lmt_price
            assert intent.trigger is not None
            # marketable: at least the offset beyond the touch (sell below the bid, buy above the ask)
            if intent.action.value == "SELL":
                assert intent.limit_price <= intent.trigger.price - Decimal(str(OFFSET))
            else:
                assert intent.limit_price >= intent.trigger.price + Decimal(str(OFFSET))
