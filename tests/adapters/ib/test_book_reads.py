"""The order book's kept conversions (adapters/ib/book_reads.py): a pass that reuses them must give exactly the book
that converting every order and execution again gives, whatever changed in ib_async's objects in between."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from decimal import Decimal
from typing import Any

from ib_async import CommissionReport, Contract, Execution, Order, OrderStatus, Trade
from ib_async.objects import Fill

from tickguard.adapters.broker import OrderBook
from tickguard.adapters.ib import book_reads
from tickguard.adapters.ib.attribution import Placed
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.config import load

ACCOUNT = "DU1"
NOW = datetime.datetime(2026, 11, 30, 15, 0, tzinfo=datetime.UTC)


def broker_with(n: int) -> IBBroker:
    """An unconnected IBBroker whose ib_async state holds ``n`` filled entries of this client, each with its fill
    (what a day of trading leaves there; the order book reads only that state)."""
    broker = IBBroker(load(None, {"ib": {"client_id": 7, "account": ACCOUNT}}).ib)
    broker.ib.client.clientId = 7
    for i in range(n):
        add_filled(broker, i)
    return broker


def add_filled(broker: IBBroker, i: int, shares: float = 1.0, exec_no: int = 0) -> Fill:
    w, cid = broker.ib.wrapper, broker.client_id
    contract = Contract(conId=1000 + i % 5, symbol=f"W{i % 5:03d}", secType="STK", exchange="SMART", currency="USD")
    ref = f"tg:8bd45684:T{i:05d}:entry"
    trade = w.trades.get((cid, i + 1))
    if trade is None:
        order = Order(orderId=i + 1, clientId=cid, permId=10_000 + i, action="BUY", totalQuantity=2, orderType="MKT",
                      orderRef=ref, account=ACCOUNT)
        status = OrderStatus(orderId=i + 1, status="Filled", filled=2, remaining=0, avgFillPrice=100.0,
                             permId=10_000 + i, clientId=cid)
        trade = w.trades[(cid, i + 1)] = Trade(contract, order, status, [], [])
        w.permId2Trade[10_000 + i] = trade
    exec_id = f"0001.{i}.{exec_no}"
    ex = Execution(execId=exec_id, time=NOW, acctNumber=ACCOUNT, exchange="SMART", side="BOT", shares=shares,
                   price=100.0 + exec_no / 100, permId=10_000 + i, clientId=cid, orderId=i + 1, cumQty=shares,
                   avgPrice=100.0, orderRef=ref)
    fill = Fill(contract, ex, CommissionReport(), NOW)
    w.fills[exec_id] = fill
    trade.fills.append(fill)
    return fill


def content(book: OrderBook) -> dict[str, Any]:
    return {f.name: getattr(book, f.name) for f in dataclasses.fields(book) if f.name != "mark"}


def passes(broker: IBBroker) -> tuple[OrderBook, OrderBook]:
    """A pass with what was kept, then one that converts everything again (what was kept dropped first)."""
    kept = asyncio.run(broker.order_book(full=False))
    broker._book_reads.start(broker._book_reads.connection - 1)  # as at a new connection: nothing kept
    fresh = asyncio.run(broker.order_book(full=False))
    return kept, fresh


def test_a_pass_with_kept_conversions_gives_the_book_a_fresh_conversion_gives():
    broker = broker_with(30)
    first = asyncio.run(broker.order_book(full=False))
    assert len(first.ended) == 30 and len(first.executions) == 30 and len(first.details) == 30
    w = broker.ib.wrapper
    # what ib_async changes in place between two passes
    fills = list(w.fills.values())
    fills[3].commissionReport.execId, fills[3].commissionReport.commission = fills[3].execution.execId, 1.25
    fills[4].commissionReport.execId, fills[4].commissionReport.commission = fills[4].execution.execId, 0.5
    order5 = w.trades[(7, 6)].order
    order5.orderType, order5.lmtPrice, order5.totalQuantity = "LMT", 99.5, 3  # an openOrder's update
    w.trades[(7, 11)].orderStatus.status = "Cancelled"  # an orderStatus
    add_filled(broker, 12, shares=1.0, exec_no=1)  # a second execution of an order
    six = fills[6].execution.execId  # another object under a known execId: read as it is now
    w.fills[six] = fills[6]._replace(execution=dataclasses.replace(fills[6].execution, price=101.0))
    add_filled(broker, 30)  # a new order and its execution
    asyncio.run(broker.order_book(full=False))
    fills[4].commissionReport.commission = 0.75  # a corrected commission report
    kept, fresh = passes(broker)
    assert content(kept) == content(fresh)
    by_exec = {f.exec_id: f for f in kept.executions}
    assert by_exec[fills[3].execution.execId].commission == 1.25
    assert by_exec[fills[4].execution.execId].commission == 0.75
    assert str(by_exec[six].price) == "101"
    assert kept.details["tg:8bd45684:T00005:entry"].limit_price == 99.5
    assert kept.details["tg:8bd45684:T00005:entry"].qty == 3
    assert kept.ended["tg:8bd45684:T00010:entry"][1].value == "cancelled"
    assert len(kept.executions) == 32 and len(kept.ended) == 31


def test_an_execution_is_converted_again_when_its_order_is_no_longer_the_one_it_was_attributed_to():
    broker = broker_with(5)
    first = asyncio.run(broker.order_book(full=False))
    assert {f.ref for f in first.executions} == {f"tg:8bd45684:T{i:05d}:entry" for i in range(5)}
    placed = broker._orders[3]
    placed.owner = dataclasses.replace(placed.owner, account="DU999")  # the same record, its owner changed
    kept, fresh = passes(broker)
    assert content(kept) == content(fresh)
    assert "tg:8bd45684:T00002:entry" not in {f.ref for f in kept.executions}  # no longer matches: foreign


def test_what_was_kept_for_one_connection_is_dropped_at_the_next():
    broker = broker_with(5)
    asyncio.run(broker.order_book(full=False))
    reads = broker._book_reads
    assert reads._fills and reads._orders
    broker.state.reconnects += 1
    broker.ib.wrapper.reset()  # ib_async's state at a new connection
    book = asyncio.run(broker.order_book(full=False))
    assert not book.executions and not reads._fills and not reads._orders


def test_orders_and_executions_are_converted_as_they_end_so_a_pass_finds_them_converted():
    """5,000 entries filled between two passes must not be converted in one hold of the loop by the next pass: the
    status handler converts an order as it ends, the commission handler an execution as its last part arrives."""
    broker = broker_with(0)
    asyncio.run(broker.order_book(full=False))
    for i in range(10):
        fill = add_filled(broker, i)
        trade = broker.ib.wrapper.trades[(7, i + 1)]
        broker._orders[i + 1] = Placed(trade.order.orderRef, trade.contract.symbol, Decimal(2), trade.order,
                                       trade.contract)
        broker._on_exec(trade, fill)  # live: applied, seen
        fill.commissionReport.execId, fill.commissionReport.commission = fill.execution.execId, 1.0
        broker._on_commission(trade, fill, fill.commissionReport)
        broker._on_status(trade)
    converted: list[str] = []
    convert, details = broker._book_execution, book_reads.order_details

    def counted_convert(fill: Fill) -> Any:
        converted.append(fill.execution.execId)
        return convert(fill)

    def counted_details(order: Order, contract: Contract) -> Any:
        converted.append(order.orderRef)
        return details(order, contract)

    broker._book_execution = counted_convert  # type: ignore[method-assign]
    book_reads.order_details = counted_details  # type: ignore[assignment]
    try:
        book = asyncio.run(broker.order_book(full=False))
    finally:
        book_reads.order_details = details
    assert converted == []
    assert len(book.executions) == 10 and len(book.details) == 10 and all(f.commission == 1 for f in book.executions)
