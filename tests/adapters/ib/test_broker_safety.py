"""Nothing at the broker boundary crashes the engine or leaves an order without a final state.

Through the real ib_async client over TCP against the fake gateway (virtual time, driven by the test):
orders and cancels while the connection is down, IB's refusals (321 for an account it does not manage, 201
with a reason) ending an order exactly once, and the account checks at connect.  Every test fails on an
ERROR logged by ib_async that it did not expect, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from fg_support import IbErrorCapture
from gateway_support import make_gateway

from ibfake.server import FakeGateway
from tickguard.adapters.broker import (
    BookMark,
    BrokerError,
    BrokerEvent,
    BrokerOrder,
    FillEvent,
    NotConnected,
    OrderStatus,
    OrderStatusEvent,
)
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Action, OrderType, Side
from tickguard.core.trades import TradeRequest

ACCOUNT = "DU0000001"
CLIENT_ID = 21


@contextlib.asynccontextmanager
async def broker_on_gateway(allow: tuple[str, ...] = (), accounts: list[str] | None = None,
                            **ib: Any) -> AsyncIterator[tuple[FakeGateway, IBBroker, list[BrokerEvent]]]:
    """A connected IBBroker (AAA qualified) on a fake gateway; yields the list the test collects events into."""
    with IbErrorCapture.installed() as errors:
        for text in allow:
            errors.allow(text)
        gw = await make_gateway(accounts=accounts).start()
        await gw.advance(2.0)
        settings = load(None, {"ib": {"port": gw.port, "client_id": CLIENT_ID, "account": ACCOUNT,
                                      "connect_timeout_s": 5, "request_timeout_s": 5,
                                      "reconnect_initial_s": 0.5, "reconnect_max_s": 1.0, **ib}})
        broker = IBBroker(settings.ib)
        try:
            await asyncio.wait_for(broker.connect(), 15)
            await asyncio.wait_for(broker.qualify("AAA"), 10)
            yield gw, broker, []
        finally:
            await broker.close()
            await gw.close()
        assert errors.unexpected() == []
        assert gw.errors == []


async def pump(gw: FakeGateway, broker: IBBroker, seen: list[BrokerEvent], pred: Callable[[], Any],
               step: float = 0.0, timeout: float = 15.0) -> None:
    """Collect the broker's events (advancing virtual time by ``step`` each round) until ``pred()`` holds."""

    async def loop() -> None:
        while not pred():
            seen.extend(await broker.next_events(broker.now_ns() + 20_000_000))
            if step:
                await gw.advance(step)

    await asyncio.wait_for(loop(), timeout)


def statuses(seen: list[BrokerEvent], order_id: int) -> list[tuple[OrderStatus, int | None, str]]:
    return [(e.status, e.code, e.reason) for e in seen if isinstance(e, OrderStatusEvent) and e.order_id == order_id]


def resting_buy(gw: FakeGateway, ref: str, account: str = ACCOUNT) -> BrokerOrder:
    """A limit buy far below the market: it works and never fills."""
    far = float(round(Decimal(repr(gw.venue.last_ticks["AAA"].bid)) / 2, 2))
    return BrokerOrder(ref, account, "AAA", Action.BUY, Decimal(10), OrderType.LIMIT, far)


def market_buy(ref: str, account: str = ACCOUNT) -> BrokerOrder:
    return BrokerOrder(ref, account, "AAA", Action.BUY, Decimal(10), OrderType.MARKET)


async def drop(gw: FakeGateway, broker: IBBroker) -> None:
    """Close the socket at the gateway and wait until the adapter knows (its reconnect waits >= 0.4 s)."""
    assert await gw.drop_connections() == 1

    async def down() -> None:
        while broker.state.connected:
            await asyncio.sleep(0.002)

    await asyncio.wait_for(down(), 5)


def reconnected(broker: IBBroker) -> Callable[[], bool]:
    return lambda: broker.state.reconnects >= 1 and broker.state.connected


# ------------------------------------------------------------------------------------ 1. never crash


async def test_a_cancel_while_disconnected_is_held_and_sent_exactly_once_after_reconnecting():
    async with broker_on_gateway(allow=("Peer closed connection", "Error 202")) as (gw, broker, seen):
        oid = broker.place_order(resting_buy(gw, "tg:T1:stop:1"))
        await pump(gw, broker, seen, lambda: statuses(seen, oid), step=0.05)
        await drop(gw, broker)
        broker.cancel_order(oid)  # ib_async would raise ConnectionError("Not connected") here
        broker.cancel_order(oid)  # asked twice while down: still one cancel
        assert gw.book.cancel_requests == [] and gw.book.orders[(CLIENT_ID, oid)].status == "Submitted"
        await pump(gw, broker, seen, lambda: len(statuses(seen, oid)) >= 2 and reconnected(broker)(), step=0.05)
        await gw.advance(3.0)
        seen.extend(await broker.next_events(broker.now_ns() + 100_000_000))
        assert gw.book.cancel_requests == [(CLIENT_ID, oid)]  # exactly one cancel reached the gateway
        assert gw.book.orders[(CLIENT_ID, oid)].status == "Cancelled"
        assert [s for s, _, _ in statuses(seen, oid)] == [OrderStatus.SUBMITTED, OrderStatus.CANCELLED]


async def test_a_cancel_lost_with_the_socket_is_sent_again_after_reconnecting():
    """ib_async queues what exceeds its request rate and drops the queue with the socket: a cancel handed over
    just before a drop never reaches IB.  After reconnecting, IB shows the order working (not PendingCancel)."""
    async with broker_on_gateway(allow=("Peer closed connection", "Error 202")) as (gw, broker, seen):
        oid = broker.place_order(resting_buy(gw, "tg:T1:stop:1"))
        await pump(gw, broker, seen, lambda: statuses(seen, oid), step=0.05)
        client = broker.ib.client
        client.MaxRequests = 1  # ib_async's throttle: one message per RequestsInterval (1 s)
        client.reqCurrentTime()  # takes this second's slot
        broker.cancel_order(oid)  # queued by ib_async, not on the wire
        await drop(gw, broker)
        client.MaxRequests = 45
        assert gw.book.cancel_requests == []  # the cancel died in ib_async's queue
        await pump(gw, broker, seen, lambda: len(statuses(seen, oid)) >= 2 and reconnected(broker)(), step=0.05)
        await gw.advance(2.0)
        assert gw.book.cancel_requests == [(CLIENT_ID, oid)]
        assert [s for s, _, _ in statuses(seen, oid)] == [OrderStatus.SUBMITTED, OrderStatus.CANCELLED]


async def test_a_cancel_ib_already_holds_is_not_sent_again_after_reconnecting():
    async with broker_on_gateway(allow=("Peer closed connection", "Error 202")) as (gw, broker, seen):
        oid = broker.place_order(resting_buy(gw, "tg:T1:stop:1"))
        await pump(gw, broker, seen, lambda: statuses(seen, oid), step=0.05)
        broker.cancel_order(oid)
        await gw.wait_for(lambda: gw.book.orders[(CLIENT_ID, oid)].status == "PendingCancel")  # no time passes
        await drop(gw, broker)
        await pump(gw, broker, seen, reconnected(broker))
        await pump(gw, broker, seen, lambda: len(statuses(seen, oid)) >= 2, step=0.05)
        assert gw.book.cancel_requests == [(CLIENT_ID, oid)]  # IB showed PendingCancel: nothing lost, nothing resent
        assert [s for s, _, _ in statuses(seen, oid)] == [OrderStatus.SUBMITTED, OrderStatus.CANCELLED]


@pytest.mark.parametrize("ended", ["filled", "cancelled at IB"])
async def test_a_held_cancel_of_an_order_that_ended_while_away_is_never_sent(ended):
    async with broker_on_gateway(allow=("Peer closed connection",)) as (gw, broker, seen):
        gw.delay_fills(3.0)  # acknowledged now, reaches the exchange 3 virtual seconds later
        oid = broker.place_order(market_buy("tg:T1:entry"))
        await pump(gw, broker, seen, lambda: statuses(seen, oid))
        await drop(gw, broker)
        broker.cancel_order(oid)
        if ended == "filled":
            await gw.advance(4.0)  # it fills at the exchange while the adapter is away
            assert gw.book.orders[(CLIENT_ID, oid)].status == "Filled"
        else:
            gw.book.cancel(CLIENT_ID, oid)  # cancelled at IB (TWS user, IB's risk desk) while away
            assert gw.book.orders[(CLIENT_ID, oid)].status == "Cancelled"
        asked = list(gw.book.cancel_requests)
        await pump(gw, broker, seen, reconnected(broker))
        await gw.advance(2.0)
        seen.extend(await broker.next_events(broker.now_ns() + 100_000_000))
        assert gw.book.cancel_requests == asked  # the held cancel was dropped, not sent
        fills = [e for e in seen if isinstance(e, FillEvent) and e.order_id == oid]
        if ended == "filled":
            assert sum(f.qty for f in fills) == 10 and statuses(seen, oid) == [(OrderStatus.SUBMITTED, None, "")]
        else:
            assert not fills and [s for s, _, _ in statuses(seen, oid)] == [OrderStatus.SUBMITTED,
                                                                          OrderStatus.CANCELLED]


async def test_an_order_while_disconnected_raises_not_connected_and_nothing_is_sent():
    async with broker_on_gateway(allow=("Peer closed connection",)) as (gw, broker, seen):
        await drop(gw, broker)
        with pytest.raises(NotConnected, match="tg:T2:entry was not sent"):
            broker.place_order(market_buy("tg:T2:entry"))
        refused: list[type[BaseException]] = []

        def while_syncing() -> None:  # ib_async is connected again; the adapter has not reconciled yet
            try:
                broker.place_order(market_buy("tg:T2:entry"))
            except Exception as exc:
                refused.append(type(exc))

        broker.ib.connectedEvent += while_syncing
        await pump(gw, broker, seen, reconnected(broker))
        broker.ib.connectedEvent -= while_syncing
        assert refused == [NotConnected]  # not before reconciliation either
        assert not gw.book.orders  # nothing reached IB
        oid = broker.place_order(market_buy("tg:T2:entry"))  # the executor's resend, once reconnected
        await pump(gw, broker, seen, lambda: any(isinstance(e, FillEvent) for e in seen), step=0.05)
        assert [o.request.order_ref for o in gw.book.orders.values()] == ["tg:T2:entry"]
        assert oid in {o.order_id for o in gw.book.orders.values()}


# ---------------------------------------------------------------------------- 2. rejections end once


async def test_an_order_for_an_account_ib_does_not_manage_ends_rejected_once_with_321():
    async with broker_on_gateway() as (gw, broker, seen):
        oid = broker.place_order(market_buy("tg:T3:entry", account="DU9999999"))
        await pump(gw, broker, seen, lambda: statuses(seen, oid), step=0.05)
        await gw.advance(3.0)
        seen.extend(await broker.next_events(broker.now_ns() + 100_000_000))
        assert statuses(seen, oid) == [
            (OrderStatus.REJECTED, 321, "Error validating request.-'bS' : cause - Invalid account code")]
        assert not gw.book.orders  # IB never created it


async def test_a_margin_rejection_ends_rejected_once_with_201_and_ibs_reason():
    reason = ("YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION YOUR EQUITY WITH LOAN VALUE "
              "[1000.00 USD] MUST EXCEED THE INITIAL MARGIN [2500.00 USD]")
    async with broker_on_gateway(allow=("Error 201",)) as (gw, broker, seen):
        gw.reject_next(reason)
        oid = broker.place_order(market_buy("tg:T4:entry"))
        await pump(gw, broker, seen, lambda: getattr(gw.book.orders.get((CLIENT_ID, oid)), "status", "") == "Inactive",
                   step=0.05)
        await gw.advance(3.0)
        seen.extend(await broker.next_events(broker.now_ns() + 100_000_000))
        ends = [s for s in statuses(seen, oid) if s[0].is_final]
        assert ends == [(OrderStatus.REJECTED, 201, f"Order rejected - reason: {reason}")]  # then Inactive: no news


# ------------------------------------------------------------------------------------------ 3. accounts


async def test_connect_refuses_an_account_ib_does_not_manage():
    with IbErrorCapture.installed() as errors:
        gw = await make_gateway(accounts=["DU1111111", "DU2222222"]).start()
        settings = load(None, {"ib": {"port": gw.port, "client_id": CLIENT_ID, "account": "DU9999999",
                                      "connect_attempts": 3, "connect_timeout_s": 5}})
        broker = IBBroker(settings.ib)
        try:
            with pytest.raises(BrokerError, match=r"IB does not manage account 'DU9999999' \(ib.account\); "
                                                  r"this login manages DU1111111, DU2222222"):
                await asyncio.wait_for(broker.connect(), 10)
            assert not broker.ib.isConnected() and not broker.state.connected
            assert broker._reconnect_task is None  # a configuration error: no reconnect loop behind it
            await gw.wait_for(lambda: not gw.sessions)  # the gateway saw the socket closed: one attempt, no retry
            assert gw.connections == 1
        finally:
            await broker.close()
            await gw.close()
        assert errors.unexpected() == []


async def test_an_order_without_an_account_goes_to_the_configured_one():
    """Two managed accounts: an order with no account would be refused by IB (321, "You must specify an
    account"); the adapter sends it to ``[ib].account``."""
    async with broker_on_gateway(accounts=["DU1111111", ACCOUNT]) as (gw, broker, seen):
        assert (await broker.account_values(ACCOUNT))["NetLiquidation"] > 0  # account updates asked after the check
        oid = broker.place_order(market_buy("tg:T5:entry", account=""))
        await pump(gw, broker, seen, lambda: any(isinstance(e, FillEvent) for e in seen), step=0.05)
        assert gw.book.orders[(CLIENT_ID, oid)].account == ACCOUNT
        assert [f.account for f in seen if isinstance(f, FillEvent)] == [ACCOUNT]
        book = await asyncio.wait_for(broker.order_book(), 10)
        assert book.default_account == ACCOUNT and book.positions[ACCOUNT] == {"AAA": 10}  # recovery's key for it


async def test_with_no_configured_account_the_logins_only_account_is_used():
    async with broker_on_gateway(account="") as (gw, broker, seen):
        assert broker.default_account == ACCOUNT  # the fake gateway's one account
        oid = broker.place_order(market_buy("tg:T6:entry", account=""))
        await pump(gw, broker, seen, lambda: any(isinstance(e, FillEvent) for e in seen), step=0.05)
        assert gw.book.orders[(CLIENT_ID, oid)].account == ACCOUNT


def test_a_trade_request_without_an_account_leaves_it_to_the_connection():
    req = TradeRequest(symbol="AAA", side=Side.LONG, qty=Decimal(1), rules=[StopLoss(distance=1)])
    assert req.account is None
    assert TradeRequest(symbol="AAA", side=Side.LONG, qty=Decimal(1), rules=[StopLoss(distance=1)],
                        account="DU1234567").account == "DU1234567"


async def test_a_new_process_learns_from_ibs_completed_orders_what_ended_while_it_was_down():
    """A restarted engine (a new connection, nothing remembered) must see that its order was cancelled at IB
    meanwhile - IB's completed orders say so, without client id or order id - or recovery would re-send it."""
    async with broker_on_gateway(allow=("Peer closed connection",)) as (gw, broker, seen):
        oid = broker.place_order(resting_buy(gw, "tg:abcd0123:T00001:entry"))
        await pump(gw, broker, seen, lambda: statuses(seen, oid))
        await broker.close()  # the engine dies
        gw.book.cancel(CLIENT_ID, oid)  # cancelled at IB while it is down
        await gw.advance(1.0)
        assert gw.book.orders[(CLIENT_ID, oid)].status == "Cancelled"
        settings = load(None, {"ib": {"port": gw.port, "client_id": CLIENT_ID, "account": ACCOUNT,
                                      "connect_timeout_s": 5, "request_timeout_s": 5}})
        fresh = IBBroker(settings.ib)
        try:
            await asyncio.wait_for(fresh.connect(), 15)
            book = await asyncio.wait_for(fresh.order_book(), 15)
        finally:
            await fresh.close()
        assert book.complete and "tg:abcd0123:T00001:entry" not in book.working
        assert book.ended["tg:abcd0123:T00001:entry"][1] is OrderStatus.CANCELLED


async def test_when_ib_does_not_answer_for_completed_orders_the_book_says_it_is_incomplete():
    """Recovery must not take an order's absence from a book it could not read as "never sent": an unanswered
    reqCompletedOrders makes the order book incomplete (nothing is re-sent blind; new entries wait), loudly."""
    async with broker_on_gateway(allow=("Peer closed connection", "completed orders could not be read")) as (
            gw, broker, seen):
        oid = broker.place_order(resting_buy(gw, "tg:abcd0123:T00001:entry"))
        await pump(gw, broker, seen, lambda: statuses(seen, oid))
        gw.completed_orders_silent = True
        broker.cfg = broker.cfg.model_copy(update={"request_timeout_s": 0.5})
        book = await asyncio.wait_for(broker.order_book(), 15)
        assert not book.complete and "tg:abcd0123:T00001:entry" in book.working  # what it could read, it keeps
        gw.completed_orders_silent = False
        assert (await asyncio.wait_for(broker.order_book(), 15)).complete


async def test_an_order_book_is_marked_in_the_event_stream_after_the_events_it_reflects():
    """The order book is read from ib_async's state, which is ahead of the events the engine has taken: a fill
    decoded but not yet handed over is in the book already.  The adapter marks the stream where it read the book
    (``BookMark``), so the engine applies the book after those events, never before them (a "submitted" status
    would otherwise arrive after the fill the book showed, and the book's executions again as replays)."""
    async with broker_on_gateway() as (gw, broker, _):
        oid = broker.place_order(market_buy("tg:abcd0123:T00007:entry"))
        deadline = asyncio.get_running_loop().time() + 15
        while not any(isinstance(e, FillEvent) for e in broker._events):  # decoded, not handed to the engine
            assert asyncio.get_running_loop().time() < deadline, "the fill never arrived"
            await gw.advance(0.05)
            await asyncio.sleep(0.01)
        book = await asyncio.wait_for(broker.order_book(full=False), 10)
        assert book.ended["tg:abcd0123:T00007:entry"] == (oid, OrderStatus.FILLED) and book.executions
        events = await broker.next_events(broker.now_ns())
        marks = [i for i, e in enumerate(events) if isinstance(e, BookMark)]
        fills = [i for i, e in enumerate(events) if isinstance(e, FillEvent)]
        assert len(marks) == 1 and events[marks[0]].token == book.mark and fills and max(fills) < marks[0]
        second = await asyncio.wait_for(broker.order_book(full=False), 10)
        assert second.mark != book.mark  # each book its own mark
