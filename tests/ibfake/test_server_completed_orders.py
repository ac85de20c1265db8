"""reqCompletedOrders: one completedOrder (101) per order that ended today - filled, cancelled or rejected - of
every client, then completedOrdersEnd (102), decoded by the real ib_async client.

Why: a client restarting after a crash must learn which of its orders ended at the gateway while it was away.
Like IB's, the message carries no orderId and no clientId (ib_async leaves both 0): an order is recognised by
its permId and orderRef.
"""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from fg_support import IbErrorCapture
from gateway_support import TIMEOUT, advance_until, connect, make_gateway, qualified, session
from ib_async import IB, LimitOrder, MarketOrder, Trade
from ib_async.decoder import Decoder

from ibfake import outgoing_orders as oo
from ibfake.outgoing import ContractSpec
from ibfake.wire import encode_field


async def completed(ib: IB, api_only: bool = True) -> dict[str, Trade]:
    trades = await asyncio.wait_for(ib.reqCompletedOrdersAsync(api_only), TIMEOUT)
    by_ref = {t.order.orderRef: t for t in trades}
    assert len(by_ref) == len(trades)
    return by_ref


async def fill_one_cancel_one(gw, ib: IB) -> tuple[Trade, Trade]:
    contract = await qualified(ib, "BBB")
    far = round(gw.venue.last_ticks["BBB"].bid * 0.5, 2)
    resting = ib.placeOrder(contract, LimitOrder("BUY", 7, far, orderRef="tg:rest"))
    filled = ib.placeOrder(contract, MarketOrder("SELL", 10, orderRef="tg:fill"))
    await advance_until(gw, lambda: filled.orderStatus.status == "Filled" and bool(filled.fills), step=0.05)
    await advance_until(gw, lambda: resting.orderStatus.status == "Submitted", step=0.05)
    ib.cancelOrder(resting.order)
    await advance_until(gw, lambda: resting.orderStatus.status == "Cancelled", step=0.05)
    return filled, resting


@pytest.mark.parametrize("order_type", ["LMT", "PEG BENCH"])
def test_every_field_lands_where_ib_async_reads_it(order_type: str) -> None:
    """Decoded by ib_async's own Decoder at version 178: the values after the variable blocks land in place, and
    one field fewer breaks the decode (the message is not longer than the decoder reads, nor shorter)."""
    order = oo.OrderSpec(17, 4, 1_000_042, "SELL", 12, order_type, lmt_price=101.25, account="DU1", order_ref="tg:x")
    contract = ContractSpec(con_id=501, symbol="AAA", sec_type="STK", exchange="SMART", currency="USD")
    fields = [encode_field(f) for f in oo.completed_order(order, contract, "Cancelled", 5, "20250102 10:00:00 "
                                                          "America/New_York", "Cancelled by Trader")]  # fmt: skip
    wrapper = mock.Mock()
    Decoder(wrapper, 178).handlers[101](list(fields))
    c, o, st = wrapper.completedOrder.call_args.args
    assert (c.conId, c.symbol, c.secType, c.exchange, c.currency) == (501, "AAA", "STK", "SMART", "USD")
    assert (o.orderId, o.clientId, o.permId, o.orderRef, o.account) == (0, 0, 1_000_042, "tg:x", "DU1")
    assert (o.action, o.totalQuantity, o.orderType, o.lmtPrice, o.filledQuantity) == ("SELL", 12, order_type,
                                                                                          101.25, 5)  # fmt: skip
    assert (st.status, st.completedTime, st.completedStatus) == (
        "Cancelled", "20250102 10:00:00 America/New_York", "Cancelled by Trader")  # fmt: skip
    with pytest.raises(ValueError):
        Decoder(mock.Mock(), 178).handlers[101](list(fields[:-1]))


async def test_completed_orders_report_a_fill_and_a_cancel_field_by_field() -> None:
    async with session(client_id=3) as (gw, ib, errors):
        errors.allow("Error 202")  # IB's "Order Canceled" confirmation
        assert await completed(ib) == {}  # nothing ended yet: only completedOrdersEnd
        filled, resting = await fill_one_cancel_one(gw, ib)
        done = await completed(ib)
        assert sorted(done) == ["tg:fill", "tg:rest"]
        f, r = done["tg:fill"], done["tg:rest"]
        assert (f.orderStatus.status, r.orderStatus.status) == ("Filled", "Cancelled")
        assert (f.order.permId, r.order.permId) == (filled.order.permId, resting.order.permId)
        assert f.order.permId and r.order.permId and f.order.permId != r.order.permId
        assert (f.order.action, f.order.totalQuantity, f.order.orderType) == ("SELL", 10.0, "MKT")
        assert (r.order.action, r.order.totalQuantity, r.order.orderType) == ("BUY", 7.0, "LMT")
        assert r.order.lmtPrice == resting.order.lmtPrice
        assert (f.order.filledQuantity, r.order.filledQuantity) == (10.0, 0.0)
        assert f.order.account == r.order.account == gw.accounts[0]
        assert f.contract.conId == filled.contract.conId and f.contract.symbol == "BBB"
        assert f.contract.secType == "STK" and type(f.contract).__name__ == "Stock"
        # as at IB: no orderId and no clientId on the wire, ib_async leaves them 0
        assert (f.order.orderId, f.order.clientId, r.order.orderId, r.order.clientId) == (0, 0, 0, 0)
        assert f.orderStatus.orderId == 0
        # apiOnly=False is the same here: every order at the fake gateway is an API order
        assert sorted(await completed(ib, api_only=False)) == ["tg:fill", "tg:rest"]
        assert gw.book.working_orders() == []


async def test_a_restarted_client_learns_what_ended_while_it_was_away() -> None:
    with IbErrorCapture.installed() as errors:
        gw = await make_gateway().start()
        ib = again = None
        try:
            await gw.advance(2.0)
            ib = await connect(gw, 1)
            contract = await qualified(ib, "AAA")
            far = round(gw.venue.last_ticks["AAA"].bid * 0.5, 2)
            resting = ib.placeOrder(contract, LimitOrder("BUY", 5, far, orderRef="tg:away-rest"))
            await advance_until(gw, lambda: resting.orderStatus.status == "Submitted", step=0.05)
            gw.delay_fills(1.0)
            pending = ib.placeOrder(contract, MarketOrder("BUY", 4, orderRef="tg:away-fill"))
            await advance_until(gw, lambda: pending.orderStatus.status == "PreSubmitted", step=0.05)
            perm_ids = {"tg:away-rest": resting.order.permId, "tg:away-fill": pending.order.permId}
            ib.disconnect()
            ib = None
            gw.book.cancel(1, resting.order.orderId)  # cancelled at the gateway (e.g. in TWS) while away
            await gw.advance(3.0)  # the delayed market order fills while away
            again = await connect(gw, 1)
            done = await completed(again)
            assert {ref: (t.orderStatus.status, t.order.permId) for ref, t in done.items()} == {
                "tg:away-rest": ("Cancelled", perm_ids["tg:away-rest"]),
                "tg:away-fill": ("Filled", perm_ids["tg:away-fill"]),
            }
            assert done["tg:away-fill"].order.filledQuantity == 4.0
            # ib_async's own start-up sync (reqCompletedOrders(False)) already put them among its trades
            assert {t.order.orderRef for t in again.trades()} >= {"tg:away-rest", "tg:away-fill"}
        finally:
            for client in (ib, again):
                if client is not None:
                    client.disconnect()
            await gw.close()
        assert errors.unexpected() == [] and gw.errors == []


async def test_completed_orders_include_other_clients_and_rejections() -> None:
    with IbErrorCapture.installed() as errors:
        errors.allow("Error 201")  # the rejection, logged by client 2
        gw = await make_gateway().start()
        one = two = None
        try:
            await gw.advance(2.0)
            one, two = await connect(gw, 1), await connect(gw, 2)
            gw.reject_next("test says no")
            rejected = two.placeOrder(await qualified(two, "CCC"), MarketOrder("BUY", 3, orderRef="theirs"))
            await advance_until(gw, lambda: rejected.orderStatus.status == "Inactive", step=0.05)
            done = await completed(one)  # not filtered by client id: the message cannot even say whose it is
            assert list(done) == ["theirs"]
            t = done["theirs"]
            assert (t.orderStatus.status, t.order.permId, t.order.filledQuantity) == (
                "Inactive", rejected.order.permId, 0.0)  # fmt: skip
            assert (t.order.clientId, t.order.orderId) == (0, 0)
        finally:
            for client in (one, two):
                if client is not None:
                    client.disconnect()
            await gw.close()
        assert errors.unexpected() == [] and gw.errors == []
