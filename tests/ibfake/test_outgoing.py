"""Server → client messages, fed through the REAL ib_async client receive path.

(Tests are ``async`` only so that ib_async's futures have a running event loop.)

Each test builds messages with the codec, frames them with ``encode_message`` and hands the bytes to
the real ``Client._onSocketHasData`` (the method the socket calls), which splits them and runs the
real ``Decoder`` into the real ``Wrapper`` of an ``ib_async.IB``. Assertions are on the resulting
ib_async objects. Any ERROR logged under ``ib_async`` fails the test, because the decoder swallows
exceptions and only logs them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from fg_support import ACCOUNT, IbErrorCapture
from ib_async import IB, BarData, BarDataList, Stock, TagValue
from ib_async.util import UNSET_DOUBLE

from ibfake import outgoing as out
from ibfake import outgoing_orders as oo
from ibfake.wire import Field, encode_message

CLIENT_ID = 7
NY = ZoneInfo("US/Eastern")
AAPL = out.ContractSpec(
    con_id=265598, symbol="AAPL", primary_exchange="NASDAQ", local_symbol="AAPL", trading_class="NMS"
)


@pytest.fixture
def ib_errors() -> Iterator[IbErrorCapture]:
    with IbErrorCapture.installed() as cap:
        yield cap
        assert not cap.unexpected(), f"ib_async logged errors: {cap.unexpected()}"


@pytest.fixture
def ib(ib_errors: IbErrorCapture) -> IB:
    """An IB whose client believes it negotiated server version 178 (no socket needed here)."""
    ib = IB()
    ib.client._serverVersion = 178
    ib.client.decoder.serverVersion = 178
    ib.wrapper.clientId = CLIENT_ID
    return ib


def deliver(ib: IB, *messages: list[Field]) -> None:
    """Push framed messages through the client's real receive path, as one TCP read."""
    ib.client._onSocketHasData(b"".join(encode_message(m) for m in messages))


async def test_session_messages(ib: IB) -> None:
    deliver(ib, out.managed_accounts(["DU1", "DU2"]), out.next_valid_id(42))
    assert ib.wrapper.accounts == ["DU1", "DU2"]
    assert ib.client.isReady() and ib.client.getReqId() == 42
    future = ib.wrapper.startReq("currentTime")
    deliver(ib, out.current_time(1735819200))
    assert future.result() == dt.datetime(2025, 1, 2, 12, 0, tzinfo=dt.UTC)


async def test_error_messages(ib: IB, ib_errors: IbErrorCapture) -> None:
    ib_errors.allow("Error 200, reqId 3")
    ib_errors.allow("Error 201, reqId 5")
    events: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: events.append((req_id, code, msg))
    assert len(out.error(-1, 2104, "x")) == 6
    deliver(ib, out.error(-1, 2104, "Market data farm connection is OK:usfarm"))
    assert events == [(-1, 2104, "Market data farm connection is OK:usfarm")]

    future = ib.wrapper.startReq(3)
    deliver(ib, out.error(3, 200, "No security definition has been found for the request"))
    assert future.result() == []  # ib_async ends the request (RaiseRequestErrors is off)

    order = oo.OrderSpec(5, CLIENT_ID, 9001, "BUY", 10, "LMT", lmt_price=1.0, account=ACCOUNT)
    deliver(ib, oo.open_order(order, AAPL, oo.OrderStateSpec("PreSubmitted")))
    trade = ib.wrapper.trades[(CLIENT_ID, 5)]
    deliver(ib, out.error(5, 201, "Order rejected - reason: no margin", '{"reason":"margin"}'))
    assert trade.orderStatus.status == "Cancelled"
    assert trade.advancedError == '{"reason":"margin"}'


async def test_market_data_ticks(ib: IB) -> None:
    contract = Stock("AAPL", "SMART", "USD", conId=265598)
    ticker = ib.wrapper.startTicker(1, contract, "mktData")
    updates: list[object] = []
    ticker.updateEvent += updates.append
    assert len(out.tick_price(1, 1, 1.0, 1)) == 7
    deliver(
        ib,
        out.market_data_type(1, 3),
        out.tick_price(1, 1, 100.25, 300),
        out.tick_price(1, 2, 100.5, 200),
        out.tick_price(1, 4, 100.4, 5),
        out.tick_size(1, 8, 12345),
        out.tick_price(1, 9, 99.0),
        out.tick_price(1, 6, 101.0),
        out.tick_price(1, 7, 98.0),
        out.tick_price(1, 14, 99.5),
        out.tick_string(1, 45, "1735819200"),
        out.tick_generic(1, 49, 0.0),
    )
    assert (ticker.bid, ticker.bidSize, ticker.ask, ticker.askSize) == (100.25, 300, 100.5, 200)
    assert (ticker.last, ticker.lastSize, ticker.volume) == (100.4, 5, 12345)
    assert (ticker.close, ticker.high, ticker.low, ticker.open) == (99.0, 101.0, 98.0, 99.5)
    assert ticker.marketDataType == 3
    assert ticker.lastTimestamp == dt.datetime(2025, 1, 2, 12, 0, tzinfo=dt.UTC)
    assert ticker.halted == 0.0
    assert updates == [ticker]
    deliver(ib, out.tick_size(1, 3, 50), out.tick_price(1, 1, 100.0, 0))
    # size 0 on a bid means "no bid": ib_async 2.1.0 stores IBDefaults.emptyPrice (-1), not NaN
    assert ticker.askSize == 50 and (ticker.bid, ticker.bidSize) == (-1, 0)

    future = ib.wrapper.startReq(2, contract)
    ib.wrapper.startTicker(2, contract, "snapshot")
    deliver(ib, out.tick_price(2, 4, 1.5, 1), out.tick_snapshot_end(2))
    assert future.done()


async def test_contract_details_stock_and_future(ib: IB) -> None:
    stock = out.ContractDetailsSpec(
        AAPL,
        long_name="APPLE INC",
        trading_hours="20250102:0400-20250102:2000;20250104:CLOSED",
        liquid_hours="20250102:0930-20250102:1600",
        sec_ids=(("ISIN", "US0378331005"),),
        industry="Technology",
    )
    es = out.ContractSpec(495512563, "ES", "FUT", "CME", "", "USD", "ESH5", "ES", 0.25, "50", "20250321")
    fut = out.ContractDetailsSpec(es, last_trade_time="08:30", time_zone_id="US/Central", stock_type="")
    future = ib.wrapper.startReq(7)
    deliver(ib, out.contract_details(7, stock), out.contract_details(7, fut), out.contract_details_end(7))
    cd_stk, cd_fut = future.result()
    c = cd_stk.contract
    assert (c.conId, c.symbol, c.secType, c.exchange, c.primaryExchange) == (
        265598, "AAPL", "STK", "SMART", "NASDAQ"
    )  # fmt: skip
    assert (c.currency, c.localSymbol, c.tradingClass) == ("USD", "AAPL", "NMS")
    assert (cd_stk.minTick, cd_stk.longName, cd_stk.timeZoneId) == (0.01, "APPLE INC", "US/Eastern")
    assert cd_stk.tradingHours.startswith("20250102:0400") and cd_stk.liquidHours.endswith("1600")
    assert cd_stk.secIdList == [TagValue("ISIN", "US0378331005")]
    assert (cd_stk.minSize, cd_stk.sizeIncrement, cd_stk.suggestedSizeIncrement) == (1.0, 1.0, 100.0)
    assert (cd_stk.stockType, cd_stk.marketRuleIds, cd_stk.industry) == ("COMMON", "26", "Technology")
    assert "LMT" in cd_stk.orderTypes.split(",")
    assert len(cd_stk.liquidSessions()) == 1
    f = cd_fut.contract
    assert (f.secType, f.lastTradeDateOrContractMonth, f.multiplier, f.localSymbol) == (
        "FUT", "20250321", "50", "ESH5"
    )  # fmt: skip
    assert (cd_fut.lastTradeTime, cd_fut.timeZoneId, cd_fut.minTick) == ("08:30", "US/Central", 0.25)


async def test_contract_details_has_no_slack(ib: IB, ib_errors: IbErrorCapture) -> None:
    """Dropping the last field must break ib_async: proves we send exactly what it unpacks."""
    fields = out.contract_details(1, out.ContractDetailsSpec(AAPL))
    ib.client.decoder.interpret([str(f) for f in fields[:-1]])
    assert any("Error handling fields" in m for m in ib_errors.unexpected())
    ib_errors.records.clear()


async def test_historical_data_daily_and_intraday(ib: IB) -> None:
    daily = [
        out.Bar(dt.date(2025, 1, 2), 100.0, 102.0, 99.0, 101.0, 1_000_000, 100.7, 5000),
        out.Bar(dt.date(2025, 1, 3), 101.0, 103.0, 100.5, 102.5, 900_000.5, 101.9, 4000),
    ]
    future = ib.wrapper.startReq(3)
    msg = out.historical_data(3, "20250101 00:00:00 UTC", "20250103 23:59:59 UTC", daily)
    assert len(msg) == 5 + 8 * 2
    deliver(ib, msg)
    bars = future.result()
    assert [b.date for b in bars] == [dt.date(2025, 1, 2), dt.date(2025, 1, 3)]
    assert (bars[1].open, bars[1].high, bars[1].low, bars[1].close) == (101.0, 103.0, 100.5, 102.5)
    assert (bars[1].volume, bars[1].average, bars[1].barCount) == (900_000.5, 101.9, 4000)

    t0 = dt.datetime(2025, 1, 2, 9, 30, tzinfo=NY)
    intraday = [
        out.Bar(t0, 1.0, 2.0, 0.5, 1.5, 10, 1.2, 3),
        out.Bar(dt.datetime(2025, 1, 2, 15, 0, tzinfo=dt.UTC), 1.5, 1.6, 1.4, 1.55, 0, 1.5, 0),
    ]
    future = ib.wrapper.startReq(4)
    deliver(ib, out.historical_data(4, "", "", intraday))
    bars = future.result()
    assert bars[0].date == t0 and str(bars[0].date.tzinfo) == "US/Eastern"
    assert bars[1].date == dt.datetime(2025, 1, 2, 15, 0, tzinfo=dt.UTC)

    live = BarDataList([BarData(date=t0, open=1.0, high=2.0, low=0.5, close=1.5)])
    live.reqId = 5
    ib.wrapper.startSubscription(5, live)
    deliver(ib, out.historical_data_update(5, out.Bar(t0, 1.0, 2.5, 0.5, 2.4, 20, 1.6, 9)))
    assert len(live) == 1 and (live[-1].high, live[-1].close, live[-1].barCount) == (2.5, 2.4, 9)
    t1 = t0 + dt.timedelta(hours=1)
    deliver(ib, out.historical_data_update(5, out.Bar(t1, 2.4, 2.6, 2.3, 2.5, 5, 2.45, 2)))
    assert len(live) == 2 and live[-1].date == t1 and live[-1].volume == 5


def _lmt(order_id: int = 5, **kw: object) -> oo.OrderSpec:
    base: dict[str, object] = dict(
        order_id=order_id, client_id=CLIENT_ID, perm_id=1_000_000 + order_id, action="BUY", total_qty=100,
        order_type="LMT", lmt_price=150.25, tif="GTC", account=ACCOUNT, order_ref="tg-entry-1",
    )  # fmt: skip
    base.update(kw)
    return oo.OrderSpec(**base)  # type: ignore[arg-type]


async def test_open_order_field_count_and_no_slack(ib: IB, ib_errors: IbErrorCapture) -> None:
    fields = oo.open_order(_lmt(), AAPL, oo.OrderStateSpec())
    assert len(fields) == 127  # counted from Decoder.openOrder at server version 178
    ib.client.decoder.interpret([str(f) for f in fields[:-1]])
    assert any("Error handling fields" in m for m in ib_errors.unexpected())
    ib_errors.records.clear()


async def test_order_lifecycle_attaches_status_fills_and_commission(ib: IB) -> None:
    order = _lmt(5, parent_id=0, outside_rth=True)
    deliver(ib, oo.open_order(order, AAPL, oo.OrderStateSpec("Submitted")))
    trade = ib.wrapper.trades[(CLIENT_ID, 5)]
    o = trade.order
    assert (o.orderId, o.clientId, o.permId, o.action) == (5, CLIENT_ID, 1_000_005, "BUY")
    assert (o.totalQuantity, o.orderType, o.lmtPrice, o.tif) == (100, "LMT", 150.25, "GTC")
    assert o.auxPrice == UNSET_DOUBLE
    assert (o.account, o.orderRef, o.outsideRth) == (ACCOUNT, "tg-entry-1", True)
    assert (o.whatIf, o.parentId) == (False, 0)
    assert o.deltaNeutralOrderType == "" and o.exemptCode == -1
    assert (trade.contract.symbol, trade.contract.conId, trade.contract.secType) == ("AAPL", 265598, "STK")
    assert trade.orderStatus.status == "Submitted"

    status = oo.order_status(5, "Submitted", 0, 100, 0.0, 1_000_005, 0, 0.0, CLIENT_ID)
    assert len(status) == 12
    deliver(ib, status)
    assert (trade.orderStatus.filled, trade.orderStatus.remaining) == (0, 100)

    fills: list[object] = []
    trade.fillEvent += lambda t, f: fills.append(f)
    when = dt.datetime(2025, 1, 2, 10, 0, 5, tzinfo=NY)
    ex = oo.ExecutionSpec("0001f4e8.6776a1b2.01.01", 5, CLIENT_ID, 1_000_005, when, ACCOUNT, "ISLAND", "BOT",
                          100, 150.2, 100, 150.2, order_ref="tg-entry-1")  # fmt: skip
    msg = oo.exec_details(-1, AAPL, ex)
    assert len(msg) == 32
    deliver(ib, msg, oo.order_status(5, "Filled", 100, 0, 150.2, 1_000_005, 0, 150.2, CLIENT_ID))
    assert len(fills) == 1 and trade.fills[0] is fills[0]
    e = trade.fills[0].execution
    assert (e.execId, e.shares, e.price, e.side, e.permId, e.clientId) == (
        ex.exec_id, 100, 150.2, "BOT", 1_000_005, CLIENT_ID
    )  # fmt: skip
    assert (e.orderRef, e.acctNumber, e.exchange, e.cumQty, e.avgPrice) == (
        "tg-entry-1", ACCOUNT, "ISLAND", 100, 150.2
    )  # fmt: skip
    assert trade.isDone() and trade.orderStatus.avgFillPrice == 150.2

    reports: list[object] = []
    trade.commissionReportEvent += lambda t, f, r: reports.append(r)
    report = oo.commission_report(ex.exec_id, 1.0, "USD")
    assert len(report) == 8
    deliver(ib, report)
    cr = trade.fills[0].commissionReport
    assert (cr.execId, cr.commission, cr.currency, cr.realizedPNL) == (ex.exec_id, 1.0, "USD", 0.0)
    assert reports == [cr]


async def test_what_if_answer(ib: IB) -> None:
    future = ib.wrapper.startReq(9)
    preliminary = oo.OrderStateSpec("PreSubmitted")  # unset margins: ib_async keeps waiting
    deliver(ib, oo.open_order(_lmt(9, what_if=True), AAPL, preliminary))
    assert not future.done()
    state = oo.OrderStateSpec(
        status="PreSubmitted", init_margin_before=1000.0, maint_margin_before=900.0,
        equity_with_loan_before=100000.0, init_margin_change=1500.5, maint_margin_change=1200.25,
        equity_with_loan_change=-1.0, init_margin_after=2500.5, maint_margin_after=2100.25,
        equity_with_loan_after=99999.0, commission=1.0, min_commission=1.0, max_commission=None,
        commission_currency="USD", warning_text="Your order size is above the precautionary limit",
    )  # fmt: skip
    deliver(ib, oo.open_order(_lmt(9, what_if=True), AAPL, state))
    st = future.result()
    assert (st.initMarginChange, st.maintMarginChange, st.initMarginAfter) == ("1500.5", "1200.25", "2500.5")
    assert (st.equityWithLoanBefore, st.commission, st.minCommission) == ("100000.0", 1.0, 1.0)
    assert st.maxCommission == UNSET_DOUBLE and st.numeric().maxCommission is None
    assert (st.commissionCurrency, st.status) == ("USD", "PreSubmitted")
    assert st.warningText == "Your order size is above the precautionary limit"
    assert ib.wrapper.trades == {}  # a what-if answer is not an order


async def test_open_orders_and_executions_requests(ib: IB) -> None:
    future = ib.wrapper.startReq("openOrders")
    stop = _lmt(6, order_type="STP", lmt_price=None, aux_price=95.5, parent_id=5, action="SELL")
    deliver(ib, oo.open_order(stop, AAPL, oo.OrderStateSpec("PreSubmitted")), oo.open_order_end())
    (trade,) = future.result()
    assert (trade.order.auxPrice, trade.order.parentId, trade.order.lmtPrice) == (95.5, 5, UNSET_DOUBLE)

    future = ib.wrapper.startReq(12)
    when = dt.datetime(2025, 1, 2, 15, 0, tzinfo=dt.UTC)
    ex = oo.ExecutionSpec("e1", 6, CLIENT_ID, 1_000_006, when, ACCOUNT, "NYSE", "SLD", 10, 95.4, 10, 95.4)
    deliver(ib, oo.exec_details(12, AAPL, ex), oo.commission_report("e1", 0.5, "USD", 12.5),
            oo.exec_details_end(12))  # fmt: skip
    (fill,) = future.result()
    assert fill.execution.time == when and fill.execution.side == "SLD"
    assert fill.commissionReport.realizedPNL == 12.5 and trade.fills == [fill]

    future = ib.wrapper.startReq("completedOrders")
    deliver(ib, oo.completed_orders_end())
    assert future.result() == []


async def test_positions_and_accounts(ib: IB) -> None:
    future = ib.wrapper.startReq("positions")
    msg = out.position(ACCOUNT, AAPL, 100, 150.25)
    assert len(msg) == 16
    deliver(ib, msg, out.position_end())
    (pos,) = future.result()
    assert (pos.account, pos.contract.conId, pos.contract.symbol, pos.position, pos.avgCost) == (
        ACCOUNT, 265598, "AAPL", 100.0, 150.25
    )  # fmt: skip
    assert ib.positions() == [pos]

    future = ib.wrapper.startReq("accountValues")
    portfolio = out.update_portfolio(AAPL, 100, 151.0, 15100.0, 150.25, 75.0, 0.0, ACCOUNT)
    assert len(portfolio) == 20
    deliver(
        ib,
        out.update_account_value("NetLiquidation", "100000.00", "USD", ACCOUNT),
        portfolio,
        out.update_account_time("12:00"),
        out.account_download_end(ACCOUNT),
    )
    assert future.done()
    (value,) = ib.accountValues()
    assert (value.account, value.tag, value.currency) == (ACCOUNT, "NetLiquidation", "USD")
    assert value.value == "100000.00"
    (item,) = ib.portfolio()
    assert (item.contract.primaryExchange, item.position, item.marketPrice, item.unrealizedPNL) == (
        "NASDAQ", 100.0, 151.0, 75.0
    )  # fmt: skip

    future = ib.wrapper.startReq(11)
    deliver(ib, out.account_update_multi(11, ACCOUNT, "", "BuyingPower", "400000", "USD"),
            out.account_update_multi_end(11))  # fmt: skip
    assert future.done()
    assert any(v.tag == "BuyingPower" and v.value == "400000" for v in ib.accountValues())

    future = ib.wrapper.startReq(14)
    deliver(ib, out.account_summary(14, ACCOUNT, "TotalCashValue", "50000.00", "USD"),
            out.account_summary_end(14))  # fmt: skip
    assert future.done()
    (summary,) = await ib.accountSummaryAsync()
    assert (summary.tag, summary.value) == ("TotalCashValue", "50000.00")
