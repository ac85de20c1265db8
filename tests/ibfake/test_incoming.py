"""Client → server parsing, checked against the bytes the REAL ib_async client writes.

A real ``ib_async.IB`` connects over TCP to a scripted server built from the codec; we call the
client's public API and check that ``parse_incoming`` reads back exactly what was sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fg_support import ACCOUNT, TIMEOUT, IbErrorCapture, ScriptedGateway
from ib_async import (
    IB,
    Bag,
    ComboLeg,
    Contract,
    DeltaNeutralContract,
    ExecutionFilter,
    LimitOrder,
    MarketOrder,
    Order,
    PriceCondition,
    Stock,
    StopLimitOrder,
    StopOrder,
    TagValue,
    TimeCondition,
)

from ibfake import incoming as inc
from ibfake.wire import MalformedField, ProtocolError

CLIENT_ID = 7
AAPL = dict(symbol="AAPL", exchange="SMART", currency="USD")


@pytest.fixture
def ib_errors() -> Iterator[IbErrorCapture]:
    with IbErrorCapture.installed() as cap:
        yield cap
        assert not cap.unexpected(), f"ib_async logged errors: {cap.unexpected()}"


@pytest.fixture
async def session(ib_errors: IbErrorCapture) -> AsyncIterator[tuple[IB, ScriptedGateway]]:
    """A real IB whose Client completed the handshake + startApi against the scripted gateway."""
    gw = await ScriptedGateway().start()
    ib = IB()
    ib.wrapper.clientId = CLIENT_ID  # IB.connectAsync would set this; we drive the Client directly
    await asyncio.wait_for(ib.client.connectAsync("127.0.0.1", gw.port, CLIENT_ID, TIMEOUT), TIMEOUT)
    try:
        yield ib, gw
    finally:
        ib.disconnect()
        await gw.close()
        assert not gw.errors, gw.errors


async def _next(gw: ScriptedGateway, cls: type, after: int) -> Any:
    """The first message of type ``cls`` recorded after index ``after``."""

    def found() -> bool:
        return any(isinstance(m, cls) for m in gw.messages[after:])

    await gw.wait_for(found)
    return next(m for m in gw.messages[after:] if isinstance(m, cls))


async def test_handshake_and_start_api(session: tuple[IB, ScriptedGateway]) -> None:
    ib, gw = session
    assert gw.handshake_versions == (157, 178)
    assert ib.client.serverVersion() == 178
    assert gw.messages[0] == inc.StartApi(client_id=CLIENT_ID, optional_capabilities="")
    assert ib.client.getAccounts() == [ACCOUNT]


def _orders() -> list[tuple[str, Contract, Order]]:
    """Orders covering every optional block of Client.placeOrder."""
    stk = Stock(conId=265598, primaryExchange="NASDAQ", **AAPL)
    trail = Order(action="SELL", totalQuantity=10, orderType="TRAIL", trailingPercent=1.5,
                  trailStopPrice=99.0)
    cond = LimitOrder("BUY", 5, 100.0, conditions=[PriceCondition(price=101.0, conId=265598, exch="SMART"),
                                                   TimeCondition(isMore=True, time="20250102 15:00:00")])
    cond.conditionsIgnoreRth = True
    algo = LimitOrder("BUY", 100, 100.0, algoStrategy="Adaptive",
                      algoParams=[TagValue("adaptivePriority", "Normal")])
    scale = LimitOrder("BUY", 1000, 100.0, scaleInitLevelSize=100, scaleSubsLevelSize=100,
                       scalePriceIncrement=0.05)
    hedge = LimitOrder("BUY", 100, 100.0, hedgeType="D", hedgeParam="0.5")
    dn = LimitOrder("BUY", 1, 5.0, deltaNeutralOrderType="LMT", deltaNeutralAuxPrice=1.0)
    peg_best = Order(action="BUY", totalQuantity=10, orderType="PEG BEST", minCompeteSize=100,
                     competeAgainstBestOffset=math.inf, midOffsetAtWhole=0.01, midOffsetAtHalf=0.005)
    peg_mid = Order(action="BUY", totalQuantity=10, orderType="PEG MID", midOffsetAtWhole=0.02,
                    midOffsetAtHalf=0.01)
    peg_bench = Order(action="BUY", totalQuantity=10, orderType="PEG BENCH", referenceContractId=8314,
                      peggedChangeAmount=0.1, referenceChangeAmount=0.2, referenceExchangeId="NYSE")
    bag = Bag(symbol="AAPL", exchange="SMART", currency="USD",
              comboLegs=[ComboLeg(conId=1, ratio=1, action="BUY", exchange="SMART"),
                         ComboLeg(conId=2, ratio=2, action="SELL", exchange="SMART")])
    bag_order = LimitOrder("BUY", 1, 0.5, smartComboRoutingParams=[TagValue("NonGuaranteed", "1")])
    dnc_stk = Stock(conId=265598, **AAPL)
    dnc_stk.deltaNeutralContract = DeltaNeutralContract(conId=8314, delta=0.5, price=10.0)
    ats = Stock(conId=265598, symbol="AAPL", exchange="IBKRATS", currency="USD")
    return [
        ("market", stk, MarketOrder("BUY", 100)),
        ("limit+ref+acct+gtc", stk, LimitOrder("SELL", 50, 123.45, orderRef="tg-entry-1", tif="GTC",
                                                account=ACCOUNT, outsideRth=True)),
        ("stop child", stk, StopOrder("SELL", 10, 95.5, parentId=5, transmit=False, orderRef="tg-stop")),
        ("stop limit", stk, StopLimitOrder("SELL", 10, 95.0, 95.5, tif="DAY")),
        ("trail", stk, trail),
        ("conditions", stk, cond),
        ("algo", stk, algo),
        ("scale", stk, scale),
        ("hedge", stk, hedge),
        ("delta neutral order type", stk, dn),
        ("peg best", stk, peg_best),
        ("peg mid", stk, peg_mid),
        ("peg bench", stk, peg_bench),
        ("bag", bag, bag_order),
        ("delta neutral contract", dnc_stk, LimitOrder("BUY", 1, 1.0)),
        ("ibkrats", ats, LimitOrder("BUY", 1, 1.0, minTradeQty=1)),
        ("cash qty", stk, Order(action="BUY", totalQuantity=0, orderType="MKT", cashQty=1000.0)),
    ]  # fmt: skip


@pytest.mark.parametrize(("label", "contract", "order"), _orders(), ids=[c[0] for c in _orders()])
async def test_place_order_variants(
    session: tuple[IB, ScriptedGateway], label: str, contract: Contract, order: Order
) -> None:
    ib, gw = session
    mark = len(gw.messages)
    trade = ib.placeOrder(contract, order)
    msg: inc.PlaceOrder = await _next(gw, inc.PlaceOrder, mark)
    o = trade.order
    assert msg.order_id == o.orderId
    assert msg.contract.symbol == contract.symbol and msg.contract.sec_type == contract.secType
    assert msg.contract.con_id == contract.conId and msg.contract.exchange == contract.exchange
    assert (msg.action, msg.total_qty, msg.order_type) == (o.action, o.totalQuantity, o.orderType)
    assert msg.lmt_price == (None if o.lmtPrice == 1.7976931348623157e308 else o.lmtPrice)
    assert msg.aux_price == (None if o.auxPrice == 1.7976931348623157e308 else o.auxPrice)
    assert (msg.tif, msg.account, msg.order_ref) == (o.tif, o.account, o.orderRef)
    assert (msg.transmit, msg.parent_id, msg.what_if) == (o.transmit, o.parentId, False)
    assert msg.outside_rth == o.outsideRth
    assert msg.algo_strategy == o.algoStrategy
    assert msg.algo_params == [(t.tag, t.value) for t in o.algoParams]
    assert [c.cond_type for c in msg.conditions] == [c.condType for c in o.conditions]
    assert msg.conditions_ignore_rth == o.conditionsIgnoreRth
    assert len(msg.combo_legs) == len(contract.comboLegs)
    if label == "trail":
        assert (msg.trailing_percent, msg.trail_stop_price) == (1.5, 99.0)
    if label == "conditions":
        assert msg.conditions[0].values["price"] == "101.0"
        assert msg.conditions[1].values["time"] == "20250102 15:00:00"
    if label == "bag":
        assert [(leg.con_id, leg.ratio, leg.action) for leg in msg.combo_legs] == [
            (1, 1, "BUY"),
            (2, 2, "SELL"),
        ]
        assert msg.smart_combo_routing_params == [("NonGuaranteed", "1")]
    if label == "delta neutral contract":
        assert msg.delta_neutral_contract == inc.DeltaNeutralContractRequest(8314, 0.5, 10.0)
    if label == "peg best":
        assert msg.raw["competeAgainstBestOffset"] == "Infinite"
        assert msg.raw["midOffsetAtHalf"] == "0.005"
    if label == "cash qty":
        assert msg.cash_qty == 1000.0


async def test_what_if_and_bracket(session: tuple[IB, ScriptedGateway]) -> None:
    ib, gw = session
    contract = Stock(conId=265598, **AAPL)
    mark = len(gw.messages)
    future = ib.whatIfOrderAsync(contract, LimitOrder("BUY", 100, 150.0, orderRef="probe"))
    msg = await _next(gw, inc.PlaceOrder, mark)
    future.cancel()  # nobody answers it here; outgoing tests cover the answer
    assert msg.what_if is True and msg.order_ref == "probe" and msg.lmt_price == 150.0

    bracket = ib.bracketOrder("BUY", 10, 100.0, 110.0, 95.0, account=ACCOUNT)
    mark = len(gw.messages)
    for o in bracket:
        ib.placeOrder(contract, o)
    await gw.wait_for(lambda: sum(isinstance(m, inc.PlaceOrder) for m in gw.messages[mark:]) == 3)
    parent, tp, sl = (m for m in gw.messages[mark:] if isinstance(m, inc.PlaceOrder))
    assert (parent.transmit, tp.transmit, sl.transmit) == (False, False, True)
    assert tp.parent_id == sl.parent_id == parent.order_id
    assert (sl.order_type, sl.aux_price, sl.action) == ("STP", 95.0, "SELL")
    assert all(m.account == ACCOUNT for m in (parent, tp, sl))

    mark = len(gw.messages)
    ib.cancelOrder(bracket.parent)
    cancel = await _next(gw, inc.CancelOrder, mark)
    assert cancel == inc.CancelOrder(order_id=bracket.parent.orderId, manual_cancel_order_time="")


async def test_market_data_requests(session: tuple[IB, ScriptedGateway]) -> None:
    ib, gw = session
    contract = Stock(conId=265598, primaryExchange="NASDAQ", **AAPL)
    mark = len(gw.messages)
    ib.reqMarketDataType(3)
    ib.reqMktData(contract, "233,236", False, False)
    assert await _next(gw, inc.ReqMarketDataType, mark) == inc.ReqMarketDataType(3)
    req: inc.ReqMktData = await _next(gw, inc.ReqMktData, mark)
    assert req.contract == inc.RequestContract(
        265598, "AAPL", "STK", "", 0.0, "", "", "SMART", "NASDAQ", "USD", "", ""
    )
    assert (req.generic_tick_list, req.snapshot, req.regulatory_snapshot) == ("233,236", False, False)
    assert req.delta_neutral_contract is None and req.combo_legs == []

    mark = len(gw.messages)
    ib.cancelMktData(contract)
    assert await _next(gw, inc.CancelMktData, mark) == inc.CancelMktData(req.req_id)

    bag = Bag(symbol="AAPL", exchange="SMART", currency="USD",
              comboLegs=[ComboLeg(conId=1, ratio=1, action="BUY", exchange="SMART")])  # fmt: skip
    mark = len(gw.messages)
    ib.reqMktData(bag, "", True, False)
    snap: inc.ReqMktData = await _next(gw, inc.ReqMktData, mark)
    assert snap.snapshot is True
    assert snap.combo_legs == [inc.ComboLegRequest(1, 1, "BUY", "SMART")]


async def test_contract_details_and_history_requests(session: tuple[IB, ScriptedGateway]) -> None:
    ib, gw = session
    contract = Stock(**AAPL)
    mark = len(gw.messages)
    details_task = asyncio.ensure_future(ib.reqContractDetailsAsync(contract))
    cd: inc.ReqContractDetails = await _next(gw, inc.ReqContractDetails, mark)
    assert (cd.contract.symbol, cd.contract.sec_type, cd.contract.con_id) == ("AAPL", "STK", 0)
    assert (cd.include_expired, cd.sec_id_type, cd.sec_id, cd.issuer_id) == (False, "", "", "")

    end = dt.datetime(2025, 1, 2, 16, 0, tzinfo=dt.UTC)
    mark = len(gw.messages)
    hist_task = asyncio.ensure_future(
        ib.reqHistoricalDataAsync(contract, end, "2 D", "1 hour", "TRADES", useRTH=True, formatDate=1)
    )
    h: inc.ReqHistoricalData = await _next(gw, inc.ReqHistoricalData, mark)
    assert (h.end_date_time, h.duration, h.bar_size) == ("20250102 16:00:00 UTC", "2 D", "1 hour")
    assert (h.what_to_show, h.use_rth, h.format_date, h.keep_up_to_date) == ("TRADES", True, 1, False)
    assert h.chart_options == ""

    mark = len(gw.messages)
    live_task = asyncio.ensure_future(
        ib.reqHistoricalDataAsync(contract, "", "1 D", "1 day", "MIDPOINT", useRTH=False, keepUpToDate=True)
    )
    live: inc.ReqHistoricalData = await _next(gw, inc.ReqHistoricalData, mark)
    assert (live.end_date_time, live.keep_up_to_date, live.use_rth) == ("", True, False)
    mark = len(gw.messages)
    ib.client.cancelHistoricalData(live.req_id)
    assert await _next(gw, inc.CancelHistoricalData, mark) == inc.CancelHistoricalData(live.req_id)
    for task in (details_task, hist_task, live_task):
        task.cancel()


async def test_account_and_order_book_requests(session: tuple[IB, ScriptedGateway]) -> None:
    ib, gw = session
    c = ib.client
    mark = len(gw.messages)
    c.reqOpenOrders()
    c.reqAllOpenOrders()
    c.reqAutoOpenOrders(True)
    c.reqPositions()
    c.cancelPositions()
    c.reqAccountUpdates(True, ACCOUNT)
    c.reqAccountUpdatesMulti(11, ACCOUNT, "", False)
    c.cancelAccountUpdatesMulti(11)
    flt = ExecutionFilter(clientId=CLIENT_ID, acctCode=ACCOUNT, time="20250102 00:00:00",
                          symbol="AAPL", secType="STK", exchange="SMART", side="BUY")  # fmt: skip
    c.reqExecutions(12, flt)
    c.reqExecutions(13, ExecutionFilter())
    c.reqCompletedOrders(False)
    c.reqAccountSummary(14, "All", "NetLiquidation,BuyingPower")
    c.cancelAccountSummary(14)
    c.reqCurrentTime()
    c.reqIds(1)
    c.reqManagedAccts()
    c.reqGlobalCancel()
    c.reqPositionsMulti(15, ACCOUNT, "")
    c.cancelPositionsMulti(15)
    expected = [
        inc.ReqOpenOrders(),
        inc.ReqAllOpenOrders(),
        inc.ReqAutoOpenOrders(True),
        inc.ReqPositions(),
        inc.CancelPositions(),
        inc.ReqAccountUpdates(True, ACCOUNT),
        inc.ReqAccountUpdatesMulti(11, ACCOUNT, "", False),
        inc.CancelAccountUpdatesMulti(11),
        inc.ReqExecutions(12, inc.ExecutionFilterRequest(
            CLIENT_ID, ACCOUNT, "20250102 00:00:00", "AAPL", "STK", "SMART", "BUY")),
        inc.ReqExecutions(13, inc.ExecutionFilterRequest(0, "", "", "", "", "", "")),
        inc.ReqCompletedOrders(False),
        inc.ReqAccountSummary(14, "All", "NetLiquidation,BuyingPower"),
        inc.CancelAccountSummary(14),
        inc.ReqCurrentTime(),
        inc.ReqIds(1),
        inc.ReqManagedAccts(),
        inc.ReqGlobalCancel(),
        inc.ReqPositionsMulti(15, ACCOUNT, ""),
        inc.CancelPositionsMulti(15),
    ]  # fmt: skip
    await gw.wait_for(lambda: len(gw.messages) - mark >= len(expected))
    assert gw.messages[mark:] == expected


async def test_unsupported_client_message_is_reported(session: tuple[IB, ScriptedGateway]) -> None:
    ib, gw = session
    ib.client.reqPnL(21, ACCOUNT, "")
    await gw.wait_for(lambda: bool(gw.unknown))
    exc = gw.unknown[0]
    assert (exc.msg_id, exc.name) == (92, "reqPnL")
    assert "92" in str(exc) and "reqPnL" in str(exc)


def test_parse_incoming_errors_name_the_problem() -> None:
    with pytest.raises(inc.UnknownMessage, match="500") as info:
        inc.parse_incoming(["500", "1"])
    assert info.value.msg_id == 500
    with pytest.raises(ProtocolError, match="empty"):
        inc.parse_incoming([])
    with pytest.raises(MalformedField, match="message id"):
        inc.parse_incoming(["abc"])
    with pytest.raises(MalformedField, match=r"reqMktData field #2 'reqId'"):
        inc.parse_incoming(["1", "11", "x"])
    with pytest.raises(MalformedField, match="expected version field 11"):
        inc.parse_incoming(["1", "10", "5"])
    with pytest.raises(MalformedField, match="trailing"):
        inc.parse_incoming(["2", "2", "5", "extra"])
    with pytest.raises(MalformedField, match="before field"):
        inc.parse_incoming(["71", "2"])


async def test_place_order_truncated_or_padded_fails_loudly(session: tuple[IB, ScriptedGateway]) -> None:
    ib, gw = session
    mark = len(gw.messages)
    ib.placeOrder(Stock(conId=1, **AAPL), LimitOrder("BUY", 1, 1.0, orderRef="x"))
    await _next(gw, inc.PlaceOrder, mark)
    fields = next(f for f in reversed(gw.frames) if f[0] == "3")
    assert fields[26] == "x"  # orderRef position from the wire notes
    with pytest.raises(MalformedField, match="placeOrder ended"):
        inc.parse_incoming(fields[:-3])
    with pytest.raises(MalformedField, match="trailing"):
        inc.parse_incoming([*fields, "junk"])
    bad = list(fields)
    bad[17] = "lots"  # totalQuantity
    with pytest.raises(MalformedField, match=r"'totalQuantity'.*'lots'"):
        inc.parse_incoming(bad)
