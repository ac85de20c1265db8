"""End to end: a real ``IB.connectAsync`` session against a tiny broker scripted only with the codec.

Why: unit tests prove each message decodes; this proves the codec is sufficient for a whole
session — handshake, the start-up sync (every end marker ib_async waits for), contract
qualification, quotes, history, what-if, a fill with commission, and a cancel — over a real socket.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from fg_support import ACCOUNT, TIMEOUT, IbErrorCapture, ScriptedGateway, Send
from ib_async import IB, LimitOrder, MarketOrder, Stock

from ibfake import incoming as inc
from ibfake import outgoing as out
from ibfake import outgoing_orders as oo

AAPL = out.ContractSpec(265598, "AAPL", primary_exchange="NASDAQ", trading_class="NMS")
NOW = dt.datetime(2025, 1, 2, 15, 0, tzinfo=dt.UTC)


class MiniBroker:
    """Answers each parsed client request with codec-built messages (fills MKT orders at 100.5)."""

    def __init__(self) -> None:
        self.client_id = -1
        self.next_perm = 5000
        self.orders: dict[int, tuple[inc.PlaceOrder, int]] = {}

    def _order_spec(self, p: inc.PlaceOrder, perm: int) -> oo.OrderSpec:
        return oo.OrderSpec(
            p.order_id, self.client_id, perm, p.action, p.total_qty, p.order_type,
            lmt_price=p.lmt_price, aux_price=p.aux_price, tif=p.tif, account=p.account or ACCOUNT,
            order_ref=p.order_ref, what_if=p.what_if, parent_id=p.parent_id,
        )  # fmt: skip

    def __call__(self, msg: Any, send: Send) -> None:
        if isinstance(msg, inc.StartApi):
            self.client_id = msg.client_id
            send(out.managed_accounts([ACCOUNT]))
            send(out.next_valid_id(1))
        elif isinstance(msg, inc.ReqPositions):
            send(out.position(ACCOUNT, AAPL, 100, 150.25))
            send(out.position_end())
        elif isinstance(msg, inc.ReqOpenOrders):
            send(oo.open_order_end())
        elif isinstance(msg, inc.ReqCompletedOrders):
            send(oo.completed_orders_end())
        elif isinstance(msg, inc.ReqAccountUpdates):
            send(out.update_account_value("NetLiquidation", "100000.00", "USD", msg.account))
            send(out.update_portfolio(AAPL, 100, 151.0, 15100.0, 150.25, 75.0, 0.0, msg.account))
            send(out.update_account_time("15:00"))
            send(out.account_download_end(msg.account))
        elif isinstance(msg, inc.ReqAccountUpdatesMulti):
            send(out.account_update_multi(msg.req_id, msg.account, "", "BuyingPower", "400000", "USD"))
            send(out.account_update_multi_end(msg.req_id))
        elif isinstance(msg, inc.ReqExecutions):
            send(oo.exec_details_end(msg.req_id))
        elif isinstance(msg, inc.ReqCurrentTime):
            send(out.current_time(int(NOW.timestamp())))
        elif isinstance(msg, inc.ReqContractDetails):
            if msg.contract.symbol == "AAPL":
                send(out.contract_details(msg.req_id, out.ContractDetailsSpec(AAPL, long_name="APPLE INC")))
                send(out.contract_details_end(msg.req_id))
            else:
                send(out.error(msg.req_id, 200, "No security definition has been found for the request"))
        elif isinstance(msg, inc.ReqMktData):
            send(out.market_data_type(msg.req_id, 1))
            send(out.tick_price(msg.req_id, 1, 100.25, 300))
            send(out.tick_price(msg.req_id, 2, 100.5, 200))
            send(out.tick_price(msg.req_id, 4, 100.4, 5))
        elif isinstance(msg, inc.ReqHistoricalData):
            bars = [out.Bar(dt.date(2025, 1, d), 100.0, 102.0, 99.0, 101.0, 1000, 100.5, 10) for d in (2, 3)]
            send(out.historical_data(msg.req_id, "20250101", "20250103", bars))
        elif isinstance(msg, inc.PlaceOrder):
            self._place(msg, send)
        elif isinstance(msg, inc.CancelOrder):
            p, perm = self.orders[msg.order_id]
            send(oo.order_status(p.order_id, "Cancelled", 0, p.total_qty, 0.0, perm, 0, 0.0, self.client_id))
            send(out.error(p.order_id, 202, "Order Canceled - reason:"))

    def _place(self, p: inc.PlaceOrder, send: Send) -> None:
        self.next_perm += 1
        perm = self.next_perm
        spec = self._order_spec(p, perm)
        if p.what_if:
            state = oo.OrderStateSpec("PreSubmitted", 0.0, 0.0, 100000.0, 5025.0, 4500.0, 0.0, 5025.0,
                                      4500.0, 100000.0, 1.0, 1.0, 1.0, "USD", "")  # fmt: skip
            send(oo.open_order(spec, AAPL, state))
            return
        self.orders[p.order_id] = (p, perm)
        send(oo.open_order(spec, AAPL, oo.OrderStateSpec("Submitted")))
        send(oo.order_status(p.order_id, "Submitted", 0, p.total_qty, 0.0, perm, 0, 0.0, self.client_id))
        if p.order_type == "MKT":
            ex = oo.ExecutionSpec(f"exec.{perm}", p.order_id, self.client_id, perm, NOW, spec.account,
                                  "ISLAND", "BOT" if p.action == "BUY" else "SLD", p.total_qty, 100.5,
                                  p.total_qty, 100.5, order_ref=p.order_ref)  # fmt: skip
            send(oo.exec_details(-1, AAPL, ex))
            send(oo.order_status(p.order_id, "Filled", p.total_qty, 0, 100.5, perm, 0, 100.5, self.client_id))
            send(oo.commission_report(ex.exec_id, 1.0, "USD"))


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` with a deadline (ib_async updates objects from its socket callbacks)."""

    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), timeout)


async def test_full_session_against_codec_built_broker() -> None:
    with IbErrorCapture.installed() as errors:
        errors.allow("Error 200, reqId")  # the unknown-symbol qualification below
        errors.allow("Error 202, reqId")  # the cancel confirmation below
        gw = await ScriptedGateway(MiniBroker()).start()
        ib = IB()
        try:
            await asyncio.wait_for(
                ib.connectAsync("127.0.0.1", gw.port, clientId=7, timeout=TIMEOUT, raiseSyncErrors=True),
                TIMEOUT * 2,
            )
            assert [p.position for p in ib.positions()] == [100.0]
            assert {v.tag for v in ib.accountValues()} >= {"NetLiquidation", "BuyingPower"}
            assert ib.portfolio()[0].marketPrice == 151.0
            assert await asyncio.wait_for(ib.reqCurrentTimeAsync(), TIMEOUT) == NOW

            contract = Stock("AAPL", "SMART", "USD")
            assert await asyncio.wait_for(ib.qualifyContractsAsync(contract), TIMEOUT) == [contract]
            assert contract.conId == 265598 and contract.primaryExchange == "NASDAQ"
            unknown = await asyncio.wait_for(ib.qualifyContractsAsync(Stock("NOPE", "SMART", "USD")), TIMEOUT)
            assert unknown == [None]

            ticker = ib.reqMktData(contract)
            await until(lambda: ticker.last == 100.4)
            assert (ticker.bid, ticker.ask, ticker.marketDataType) == (100.25, 100.5, 1)

            bars = await asyncio.wait_for(
                ib.reqHistoricalDataAsync(contract, "", "2 D", "1 day", "TRADES", True), TIMEOUT
            )
            assert [b.date for b in bars] == [dt.date(2025, 1, 2), dt.date(2025, 1, 3)]

            what_if = ib.whatIfOrderAsync(contract, LimitOrder("BUY", 50, 100.0))
            state = await asyncio.wait_for(what_if, TIMEOUT)
            assert (state.initMarginChange, state.commission) == ("5025.0", 1.0)

            trade = ib.placeOrder(contract, MarketOrder("BUY", 10, orderRef="e2e-entry"))
            await until(lambda: trade.isDone() and any(f.commissionReport.execId for f in trade.fills))
            assert trade.orderStatus.status == "Filled" and trade.orderStatus.avgFillPrice == 100.5
            assert trade.fills[0].execution.orderRef == "e2e-entry"
            assert trade.fills[0].commissionReport.commission == 1.0

            resting = ib.placeOrder(contract, LimitOrder("BUY", 10, 90.0))
            await until(lambda: resting.orderStatus.status == "Submitted")
            ib.cancelOrder(resting.order)
            await until(lambda: resting.orderStatus.status == "Cancelled")
        finally:
            ib.disconnect()
            await gw.close()
        assert not gw.errors and not gw.unknown, (gw.errors, gw.unknown)
        assert not errors.unexpected(), errors.unexpected()
