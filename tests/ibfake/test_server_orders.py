"""Orders through the fake gateway with the real ib_async client: fills, cancels, modifications,
partial fills, rejections, what-if, positions, and a reconnect that finds fills made while away.

Why: the engine's invariants (no duplicate exits across reconnects, orderRef as idempotency key,
reconciliation from executions) are tested against this gateway, so its order life cycle must be
exactly what ib_async expects from TWS: same permId and clientId everywhere, fills attached to the
Trade, commission reports, and statuses in IB's order.
"""

from __future__ import annotations

import asyncio

from gateway_support import TIMEOUT, advance_until, connect, qualified, session, until
from ib_async import LimitOrder, MarketOrder, Trade

from ibfake.server import DEFAULT_ACCOUNT


def fully_reported(trade: Trade) -> bool:
    return trade.isDone() and bool(trade.fills) and all(f.commissionReport.execId for f in trade.fills)


async def test_market_order_fills_with_commission_and_order_ref() -> None:
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib, "AAA")
        trade = ib.placeOrder(contract, MarketOrder("BUY", 100, orderRef="tg:trade-1:entry"))
        await until(lambda: trade.orderStatus.status == "PreSubmitted")
        await advance_until(gw, lambda: fully_reported(trade), step=0.05)
        assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 100
        fill = trade.fills[0]
        assert fill.execution.orderRef == "tg:trade-1:entry" and fill.execution.side == "BOT"
        assert fill.execution.permId == trade.order.permId == trade.orderStatus.permId != 0
        assert fill.commissionReport.commission == 1.0  # 100 shares x 0.005, IB-style minimum of 1
        assert trade.order.orderRef == "tg:trade-1:entry"
        assert fill.execution.price == gw.book.executions[0].execution.price


async def test_limit_order_rests_then_cancels() -> None:
    async with session() as (gw, ib, errors):
        errors.allow("Error 202")  # IB's "Order Canceled" confirmation is logged as an error
        contract = await qualified(ib, "BBB")
        far = round(gw.venue.last_ticks["BBB"].bid * 0.5, 2)
        trade = ib.placeOrder(contract, LimitOrder("BUY", 10, far, orderRef="rest"))
        await advance_until(gw, lambda: trade.orderStatus.status == "Submitted", step=0.05)
        await gw.advance(5)
        assert trade.orderStatus.status == "Submitted" and not trade.fills
        assert [t.order.orderRef for t in await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), TIMEOUT)] == ["rest"]
        ib.cancelOrder(trade.order)
        await until(lambda: trade.orderStatus.status == "PendingCancel")
        await advance_until(gw, lambda: trade.orderStatus.status == "Cancelled", step=0.05)
        assert not gw.book.working_orders()


async def test_modify_working_limit_order_then_fill_at_new_price() -> None:
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib, "CCC")
        far = round(gw.venue.last_ticks["CCC"].bid * 0.5, 2)
        order = LimitOrder("BUY", 10, far, orderRef="mod")
        trade = ib.placeOrder(contract, order)
        await advance_until(gw, lambda: trade.orderStatus.status == "Submitted", step=0.05)
        order.totalQuantity = 30
        order.lmtPrice = round(gw.venue.last_ticks["CCC"].ask * 1.05, 2)  # marketable now
        ib.placeOrder(contract, order)
        await advance_until(gw, lambda: fully_reported(trade), step=0.05)
        assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 30
        assert sum(f.execution.shares for f in trade.fills) == 30
        assert all(f.execution.price <= order.lmtPrice for f in trade.fills)
        assert gw.book.stats.modified == 1


async def test_partial_fill_injection() -> None:
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib, "AAA")
        statuses: list[tuple[str, float]] = []
        ib.orderStatusEvent += lambda t: statuses.append((t.orderStatus.status, t.orderStatus.filled))
        gw.partial_next()
        trade = ib.placeOrder(contract, MarketOrder("SELL", 200, orderRef="partial"))
        await advance_until(gw, lambda: fully_reported(trade), step=0.05)
        assert len(trade.fills) == 2 and sum(f.execution.shares for f in trade.fills) == 200
        assert any(s == "Submitted" and 0 < filled < 200 for s, filled in statuses), statuses
        assert trade.fills[1].execution.cumQty == 200


async def test_reject_next_reaches_the_trade_as_error_201() -> None:
    async with session() as (gw, ib, errors):
        errors.allow("Error 201")
        contract = await qualified(ib, "AAA")
        codes: list[tuple[int, int, str]] = []
        ib.errorEvent += lambda req_id, code, msg, c: codes.append((req_id, code, msg))
        gw.reject_next("test says no")
        trade = ib.placeOrder(contract, MarketOrder("BUY", 10, orderRef="rejected"))
        await advance_until(gw, lambda: trade.orderStatus.status == "Inactive", step=0.05)
        assert not trade.fills
        assert codes == [(trade.order.orderId, 201, "Order rejected - reason: test says no")]
        # as TWS: the error first (ib_async marks the trade Cancelled with the reason), then Inactive
        assert [(e.status, e.errorCode) for e in trade.log[-2:]] == [("Cancelled", 201), ("Inactive", 0)]
        assert "test says no" in trade.log[-2].message
        again = ib.placeOrder(contract, MarketOrder("BUY", 10))  # only the next order was rejected
        await advance_until(gw, lambda: fully_reported(again), step=0.05)


async def test_an_order_for_an_account_ib_does_not_manage_gets_321_and_never_exists() -> None:
    async with session(accounts=["DU111", "DU222"]) as (gw, ib, _errors):
        contract = await qualified(ib, "AAA")
        codes: list[tuple[int, int, str]] = []
        ib.errorEvent += lambda req_id, code, msg, c: codes.append((req_id, code, msg))
        foreign = ib.placeOrder(contract, MarketOrder("BUY", 10, orderRef="foreign", account="DU999"))
        unnamed = ib.placeOrder(contract, MarketOrder("BUY", 10, orderRef="unnamed"))  # two accounts: name one
        await until(lambda: len(codes) == 2)
        await gw.advance(1.0)
        assert codes == [
            (foreign.order.orderId, 321, "Error validating request.-'bS' : cause - Invalid account code"),
            (unnamed.order.orderId, 321, "Error validating request.-'bS' : cause - You must specify an account."),
        ]
        assert not gw.book.orders and gw.book.stats.refused_validation == 2  # no order, no permId, no fill
        # ib_async 2.1.0 counts 321 as a warning: the trade is left at ValidationError, never ended
        assert foreign.orderStatus.status == unnamed.orderStatus.status == "ValidationError"
        named = ib.placeOrder(contract, MarketOrder("BUY", 10, orderRef="named", account="DU222"))
        await advance_until(gw, lambda: fully_reported(named), step=0.05)
        assert named.fills[0].execution.acctNumber == "DU222"


async def test_what_if_returns_margin_and_commission() -> None:
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib, "BBB")
        state = await asyncio.wait_for(ib.whatIfOrderAsync(contract, MarketOrder("BUY", 100)), TIMEOUT)
        ask = gw.venue.last_ticks["BBB"].ask
        assert float(state.initMarginChange) == 100 * ask * 0.25
        assert float(state.maintMarginChange) < float(state.initMarginChange)
        assert state.commission == 1.0 and state.commissionCurrency == "USD"
        assert float(state.equityWithLoanBefore) > 0 and not ib.openTrades()
        assert not gw.book.orders  # a what-if is never an order


async def test_positions_and_account_after_a_fill() -> None:
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib, "CCC")
        before = {v.tag: float(v.value) for v in ib.accountValues() if v.currency == "USD"}
        trade = ib.placeOrder(contract, MarketOrder("BUY", 50))
        await advance_until(gw, lambda: fully_reported(trade) and ib.positions(), step=0.05)
        [position] = ib.positions()
        assert (position.account, position.contract.conId, position.position) == (
            DEFAULT_ACCOUNT, contract.conId, 50.0,
        )  # fmt: skip
        assert position.avgCost == trade.fills[0].execution.price
        await until(lambda: [p.position for p in ib.portfolio()] == [50.0])
        after = {v.tag: float(v.value) for v in ib.accountValues() if v.currency == "USD"}
        assert after["GrossPositionValue"] > 0 == before["GrossPositionValue"]
        assert after["BuyingPower"] < before["BuyingPower"]
        assert await asyncio.wait_for(ib.reqPositionsAsync(), TIMEOUT)


async def test_fill_while_disconnected_is_seen_after_reconnect() -> None:
    async with session(client_id=3) as (gw, ib, errors):
        errors.allow("Peer closed connection")  # ib_async logs the dropped socket at ERROR level
        contract = await qualified(ib, "AAA")
        ask = gw.venue.last_ticks["AAA"].ask
        resting = ib.placeOrder(contract, LimitOrder("SELL", 20, round(ask * 1.5, 2), orderRef="exit:t1"))
        marketable = ib.placeOrder(contract, LimitOrder("BUY", 20, round(ask * 1.05, 2), orderRef="entry:t1"))
        await gw.wait_for(lambda: len(gw.book.orders) == 2)
        gw.delay_fills(3)  # this one reaches the exchange only after the client is gone
        late = ib.placeOrder(contract, MarketOrder("BUY", 5, orderRef="entry:t2"))
        await advance_until(gw, lambda: fully_reported(marketable) and resting.orderStatus.status == "Submitted",
                            step=0.05)  # fmt: skip
        assert late.orderStatus.status == "PreSubmitted" and not late.fills

        assert await gw.drop_connections() == 1
        await until(lambda: not ib.isConnected())
        await advance_until(gw, lambda: gw.book.orders[(3, late.order.orderId)].status == "Filled")

        again = await connect(gw, client_id=3)
        try:
            fills = await asyncio.wait_for(again.reqExecutionsAsync(), TIMEOUT)
            refs = sorted(f.execution.orderRef for f in fills)
            assert refs == ["entry:t1", "entry:t2"]
            # ib_async attaches commission reports to the fills it already knows from the connect sync
            assert all(f.commissionReport.commission > 0 for f in again.fills())
            open_refs = [t.order.orderRef for t in again.openTrades()]
            assert open_refs == ["exit:t1"]  # the working order survived the disconnect
            assert [p.position for p in again.positions()] == [25.0]
            assert again.client.getReqId() > late.order.orderId
        finally:
            again.disconnect()
