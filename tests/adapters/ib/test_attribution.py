"""Attribution: an order report or an execution belongs to an order of tickguard's only if orderRef, client id,
account, contract (conId) and side all match - and the permId once both sides know it.

IB numbers orders per API client, so another client's order can carry the same order id; a master API client
(and reqExecutions at a master client) sees every client's orders and executions; orderRef is free text.  The
pure rule is tested first, then the adapter on hand-made executions, then the real ib_async client over TCP
against the fake gateway: another client's order under the same order id, live and across a reconnect, and
the recovery's ``order_book``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from fg_support import IbErrorCapture
from gateway_support import advance_until, connect, make_gateway, qualified
from ib_async import IB, Contract, Execution, LimitOrder, MarketOrder
from ib_async.objects import CommissionReport, Fill

from ibfake.server import FakeGateway
from tickguard.adapters.broker import BrokerEvent, BrokerOrder, CommissionEvent, FillEvent, OrderStatusEvent
from tickguard.adapters.ib.attribution import Owner, Placed, PlacedOrders, mismatches
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.config import load
from tickguard.core.model import Action, OrderType
from tickguard.core.order_state import OrderStatus

ACCOUNT, OTHER_ACCOUNT = "DU0000001", "DU0000002"
TG, OTHER = 21, 99  # tickguard's client id, another API client's
REF = "tg:0a1b2c3d:T00001:entry"

# ----------------------------------------------------------------------------------------- the rule

OURS = Owner(REF, TG, ACCOUNT, 4001, "BUY", 0)


@pytest.mark.parametrize(("field", "value"), [
    ("ref", "tg:0a1b2c3d:T00002:entry"), ("client_id", OTHER), ("account", OTHER_ACCOUNT), ("con_id", 4002),
    ("side", "SELL"),
])
def test_any_identifying_field_that_differs_makes_it_foreign(field: str, value: Any) -> None:
    seen = Owner(**{**{k: getattr(OURS, k) for k in Owner.__slots__}, field: value})
    assert len(mismatches(OURS, seen)) == 1
    assert mismatches(OURS, OURS) == []


def test_the_perm_id_counts_once_both_sides_know_it() -> None:
    known = Owner(REF, TG, ACCOUNT, 4001, "BUY", 1_000_001)
    assert mismatches(OURS, known) == [] and mismatches(known, OURS) == []  # 0: not known yet
    assert mismatches(known, Owner(REF, TG, ACCOUNT, 4001, "BUY", 1_000_002)) == ["permId 1000002 != ours 1000001"]


def test_an_executions_bot_and_sld_are_the_orders_buy_and_sell() -> None:
    assert Owner.of_fill(execution("e1", side="BOT")).side == "BUY"
    assert Owner.of_fill(execution("e1", side="SLD")).side == "SELL"


def _placed(ref: str, order_id: int) -> Placed:
    return Placed(ref, "AAA", Decimal(1), MarketOrder("BUY", 1, orderId=order_id, orderRef=ref), Contract(conId=1))


def test_the_orders_are_found_by_their_key_as_a_scan_of_them_would_find_them() -> None:
    """The orderRef index answers what a walk over every order answered (the first order placed under a key; none
    for an empty key) - a walk per lookup made recovery's order book quadratic in the day's orders."""
    orders = PlacedOrders()
    orders[5] = _placed("tg:j:T1:entry", 5)
    orders[9] = _placed("tg:j:T1:entry", 9)  # re-sent under its key after a pacing refusal: a second order id
    orders[7] = _placed("tg:j:T2:stop:1", 7)
    orders[8] = _placed("", 8)

    def scan(ref: str) -> int | None:
        return next((oid for oid, p in orders.items() if ref and p.ref == ref), None)

    for ref in ("tg:j:T1:entry", "tg:j:T2:stop:1", "", "tg:j:T3:entry"):
        assert orders.id_of(ref) == scan(ref), ref
    orders[5] = _placed("tg:j:T4:entry", 5)  # an id taken over by another order (adopted from IB's book)
    for ref in ("tg:j:T1:entry", "tg:j:T4:entry"):
        assert orders.id_of(ref) == scan(ref), ref
    assert orders.id_of("tg:j:T1:entry") == 9


# ---------------------------------------------------------------------- the adapter, hand-made executions


def execution(exec_id: str, *, order_id: int = 5, ref: str = REF, client_id: int = TG, account: str = ACCOUNT,
              con_id: int = 4001, symbol: str = "AAA", side: str = "BOT", perm_id: int = 0, shares: float = 10
              ) -> Fill:
    ex = Execution(execId=exec_id, acctNumber=account, side=side, shares=shares, price=100.0, permId=perm_id,
                   clientId=client_id, orderId=order_id, orderRef=ref, cumQty=shares)
    return Fill(Contract(symbol=symbol, conId=con_id), ex, CommissionReport(),
                dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC))


@pytest.fixture
def broker() -> IBBroker:
    b = IBBroker(load(None, {}).ib)
    b.ib.client.clientId = TG
    order = MarketOrder("BUY", 100, orderId=5, clientId=TG, orderRef=REF, account=ACCOUNT)
    b._orders[5] = Placed(REF, "AAA", Decimal(100), order, Contract(symbol="AAA", conId=4001))
    return b


def fills(b: IBBroker) -> list[str]:
    return [e.exec_id for e in b._events if isinstance(e, FillEvent)]


@pytest.mark.parametrize("foreign", [
    {"client_id": OTHER, "symbol": "MSFT", "con_id": 4002, "ref": "theirs"},  # another client, same order id
    {"account": OTHER_ACCOUNT}, {"side": "SLD"}, {"con_id": 4002}, {"client_id": OTHER},
    {"order_id": 6, "side": "SLD"},  # another order id of ours with the same orderRef (IB does not keep it unique)
])
def test_an_execution_that_differs_in_any_field_is_foreign_logged_once_and_counted(broker, caplog, foreign):
    with caplog.at_level("WARNING", logger="tickguard.adapters.ib"):
        broker._apply_fill(execution("x1", **foreign))
        broker._apply_fill(execution("x1", **foreign))  # replayed: still refused, logged and counted once
    assert fills(broker) == [] and broker._orders[5].filled == 0 and broker.foreign_executions == 1
    warnings = [r.getMessage() for r in caplog.records if "foreign execution x1" in r.getMessage()]
    assert len(warnings) == 1 and "!= ours" in warnings[0]
    broker._apply_fill(execution("e1"))  # the order's own execution is applied
    assert fills(broker) == ["e1"] and broker._orders[5].filled == 10


def test_once_the_perm_id_is_known_another_perm_id_is_foreign(broker):
    broker._apply_fill(execution("e1", perm_id=1_000_001))
    broker._apply_fill(execution("x2", perm_id=1_000_777))
    assert fills(broker) == ["e1"] and broker.foreign_executions == 1


# ------------------------------------------------------------------------- over the wire, the fake gateway


@contextlib.asynccontextmanager
async def gateway(**kwargs: Any) -> AsyncIterator[FakeGateway]:
    with IbErrorCapture.installed() as errors:
        errors.allow("Error 202")  # IB's "Order Canceled" confirmation, logged by ib_async as an error
        errors.allow("Peer closed connection")
        gw = await make_gateway(accounts=[ACCOUNT, OTHER_ACCOUNT], **kwargs).start()
        try:
            await gw.advance(2.0)
            yield gw
        finally:
            await gw.close()
        assert errors.unexpected() == []
        assert gw.errors == []


@contextlib.asynccontextmanager
async def tickguard(gw: FakeGateway, **ib: Any) -> AsyncIterator[IBBroker]:
    settings = load(None, {"ib": {"port": gw.port, "client_id": TG, "account": ACCOUNT, "connect_timeout_s": 5,
                                  "request_timeout_s": 5, "reconnect_initial_s": 0.5, "reconnect_max_s": 1.0, **ib}})
    broker = IBBroker(settings.ib)
    try:
        await asyncio.wait_for(broker.connect(), 15)
        await asyncio.wait_for(broker.qualify("AAA"), 10)
        yield broker
    finally:
        await broker.close()


@contextlib.asynccontextmanager
async def client(gw: FakeGateway, client_id: int) -> AsyncIterator[IB]:
    ib = await connect(gw, client_id)
    try:
        yield ib
    finally:
        ib.disconnect()


async def pump(gw: FakeGateway, broker: IBBroker, seen: list[BrokerEvent], pred: Callable[[], Any],
               step: float = 0.05, timeout: float = 15.0) -> None:
    async def loop() -> None:
        while not pred():
            seen.extend(await broker.next_events(broker.now_ns() + 20_000_000))
            await gw.advance(step)

    await asyncio.wait_for(loop(), timeout)


async def settle(gw: FakeGateway, broker: IBBroker, seen: list[BrokerEvent], seconds: float = 1.0) -> None:
    for _ in range(int(seconds / 0.05)):
        await gw.advance(0.05)
        seen.extend(await broker.next_events(broker.now_ns() + 5_000_000))


def resting_buy(gw: FakeGateway) -> BrokerOrder:
    far = float(round(Decimal(repr(gw.venue.last_ticks["AAA"].bid)) / 2, 2))
    return BrokerOrder(REF, ACCOUNT, "AAA", Action.BUY, Decimal(10), OrderType.LIMIT, far)


def of_type(seen: list[BrokerEvent], kind: type) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


async def foreign_market_fill(gw: FakeGateway, other: IB, order_id: int, ref: str = REF) -> None:
    """Another API client buys 7 BBB under tickguard's order id (and orderRef): IB lets it, ids are per client."""
    order = MarketOrder("BUY", 7, orderId=order_id, orderRef=ref, account=ACCOUNT)
    trade = other.placeOrder(await qualified(other, "BBB"), order)
    await advance_until(gw, lambda: trade.orderStatus.status == "Filled" and bool(trade.fills), step=0.05)


async def test_another_clients_fill_under_the_same_order_id_never_reaches_tickguard_live() -> None:
    async with gateway(master_client_id=TG) as gw, tickguard(gw) as broker, client(gw, OTHER) as other:
        seen: list[BrokerEvent] = []
        oid = broker.place_order(resting_buy(gw))
        await pump(gw, broker, seen, lambda: of_type(seen, OrderStatusEvent))
        await foreign_market_fill(gw, other, oid)
        # tickguard's ib_async (the master client) got the foreign execution, and handed it to the adapter
        await pump(gw, broker, seen, lambda: any(f.execution.clientId == OTHER for f in broker.ib.fills()))
        await settle(gw, broker, seen)
        assert of_type(seen, FillEvent) == [] and broker._orders[oid].filled == 0
        assert of_type(seen, CommissionEvent) == []  # nor its commission report
        assert broker.foreign_executions == 1 and broker.foreign_statuses >= 1
        assert [e.status for e in of_type(seen, OrderStatusEvent)] == [OrderStatus.SUBMITTED]


async def test_another_clients_cancel_under_the_same_order_id_does_not_end_tickguards_order() -> None:
    async with gateway(master_client_id=TG) as gw, tickguard(gw) as broker, client(gw, OTHER) as other:
        seen: list[BrokerEvent] = []
        oid = broker.place_order(resting_buy(gw))
        await pump(gw, broker, seen, lambda: of_type(seen, OrderStatusEvent))
        far = round(gw.venue.last_ticks["BBB"].ask * 2, 2)  # a sell far above the market: it rests
        order = LimitOrder("SELL", 3, far, orderId=oid, account=ACCOUNT, orderRef=REF)
        trade = other.placeOrder(await qualified(other, "BBB"), order)
        await advance_until(gw, lambda: trade.orderStatus.status == "Submitted", step=0.05)
        other.cancelOrder(trade.order)
        await advance_until(gw, lambda: trade.orderStatus.status == "Cancelled", step=0.05)
        await settle(gw, broker, seen)
        assert [e.status for e in of_type(seen, OrderStatusEvent)] == [OrderStatus.SUBMITTED]
        assert not broker._orders[oid].final and broker.foreign_statuses >= 1
        assert gw.book.orders[(TG, oid)].status == "Submitted"


async def test_another_clients_fill_made_while_tickguard_was_away_is_not_applied_at_reconnect() -> None:
    async with gateway(master_client_id=TG) as gw, tickguard(gw, reconnect_initial_s=2.0,
                                                             reconnect_max_s=2.0) as broker:
        seen: list[BrokerEvent] = []
        oid = broker.place_order(resting_buy(gw))
        await pump(gw, broker, seen, lambda: of_type(seen, OrderStatusEvent))
        assert await gw.drop_connections() == 1
        async with client(gw, OTHER) as other:  # while tickguard waits to reconnect
            await foreign_market_fill(gw, other, oid)
        assert broker.state.reconnects == 0  # it really happened while tickguard was away
        await pump(gw, broker, seen, lambda: broker.state.reconnects >= 1 and broker.state.connected)
        await settle(gw, broker, seen)
        assert any(f.execution.clientId == OTHER for f in broker.ib.fills())  # reqExecutions at the master client
        assert of_type(seen, FillEvent) == [] and broker._orders[oid].filled == 0
        assert broker.foreign_executions == 1 and not broker._orders[oid].final


async def test_order_book_leaves_out_other_clients_executions_and_a_reused_order_ref_of_another_side() -> None:
    async with gateway(master_client_id=TG) as gw:
        async with client(gw, OTHER) as other:  # another client, a tg: key, the order id tickguard will use
            await foreign_market_fill(gw, other, 1, ref="tg:0a1b2c3d:T00009:entry")
        async with client(gw, TG) as before:  # tickguard's client id, an earlier run: a buy, then a sell that
            aaa = await qualified(before, "AAA")  # reuses its orderRef (IB does not keep orderRef unique)
            for action, qty in (("BUY", 10), ("SELL", 4)):
                trade = before.placeOrder(aaa, MarketOrder(action, qty, orderRef=REF, account=ACCOUNT))
                await advance_until(gw, lambda t=trade: t.orderStatus.status == "Filled" and bool(t.fills), step=0.05)
        async with tickguard(gw) as broker:
            assert {f.execution.clientId for f in broker.ib.fills()} == {TG, OTHER}  # the master sees them all
            book = await asyncio.wait_for(broker.order_book(), 10)
            assert [(e.ref, e.symbol, e.action, e.qty) for e in book.executions] == [(REF, "AAA", Action.BUY, 10)]
            assert broker.foreign_executions == 2
