"""``place_new`` is ``IB.placeOrder``'s new-order branch without its per-order INFO line: on the fake gateway over a
real socket, the two put the same bytes on the wire, the same Trade under the same key in ib_async's books, emit
the same event, and ib_async keeps both trades live to the same end."""

from __future__ import annotations

import hashlib
import inspect
import logging

from gateway_support import advance_until, qualified, session
from ib_async import IB, LimitOrder, MarketOrder, Order

from tickguard.adapters.ib.placing import SilentClient, place_new

# IB.placeOrder of the ib_async this was written against (2.1.0).  A release that changes it fails here: read the new
# one, bring adapters/ib/placing.py in line with its new-order branch, then update the digest.
PLACE_ORDER_SHA256 = "1a1ffd7e535d323b9ae06fe62445533354f463c6b899fb52de338800e5d5aed7"


def test_ib_async_place_order_is_the_one_place_new_mirrors():
    source = inspect.getsource(IB.placeOrder)
    assert hashlib.sha256(source.encode()).hexdigest() == PLACE_ORDER_SHA256, (
        "ib_async's IB.placeOrder changed: compare it with tickguard/adapters/ib/placing.py")


def _fields(msg: bytes, order_id: int, ref: str) -> list[bytes]:
    """A placeOrder message's fields with its order id and order ref masked (the two that differ)."""
    return [b"<id>" if f == str(order_id).encode() else b"<ref>" if f == ref.encode() else f
            for f in msg[4:].split(b"\0")]


async def test_place_new_sends_and_books_an_order_exactly_as_ib_async_does(caplog):
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib)
        sent: list[bytes] = []
        real_send = ib.client.conn.sendMsg
        ib.client.conn.sendMsg = lambda msg: (sent.append(msg), real_send(msg))[1]  # type: ignore[method-assign]
        new_orders: list[object] = []
        ib.newOrderEvent += new_orders.append
        results = []
        for n, place in enumerate((IB.placeOrder, place_new)):
            for make in (lambda: MarketOrder("BUY", 3), lambda: LimitOrder("SELL", 2, 1.5)):
                order: Order = make()
                order.orderRef, order.account, order.tif = f"ref-{n}", "DU0000001", "DAY"
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="ib_async"):
                    trade = place(ib, contract, order) if place is place_new else ib.placeOrder(contract, order)
                results.append((trade, _fields(sent[-1], trade.order.orderId, f"ref-{n}"),
                                [r.getMessage()[:25] for r in caplog.records if r.name == "ib_async.ib"]))
        (a_mkt, wire_a_mkt, log_a_mkt), (a_lmt, wire_a_lmt, _), (b_mkt, wire_b_mkt, log_b_mkt), (b_lmt, wire_b_lmt, _) \
            = results
        assert wire_a_mkt == wire_b_mkt and wire_a_lmt == wire_b_lmt  # the same bytes, id and ref aside
        assert log_a_mkt == ["placeOrder: New order Tra"] and log_b_mkt == []  # the one difference
        for a, b in ((a_mkt, b_mkt), (a_lmt, b_lmt)):
            key = ib.wrapper.orderKey(ib.wrapper.clientId, b.order.orderId, b.order.permId)
            assert ib.wrapper.trades[key] is b and b.order.orderId == a.order.orderId + 2
            assert b.order.clientId == a.order.clientId == ib.wrapper.clientId
            assert b.contract is a.contract and b.orderStatus.status == a.orderStatus.status == "PendingSubmit"
            assert [e.status for e in b.log] == [e.status for e in a.log] and b.fills == a.fills == []
            assert {f: getattr(b.order, f) for f in ("action", "totalQuantity", "orderType", "lmtPrice", "tif")} == \
                   {f: getattr(a.order, f) for f in ("action", "totalQuantity", "orderType", "lmtPrice", "tif")}
        assert new_orders == [a_mkt, a_lmt, b_mkt, b_lmt]
        # ib_async keeps the trade place_new booked live: the gateway's answers reach it as they reach the other
        await advance_until(gw, lambda: a_mkt.isDone() and b_mkt.isDone())
        assert b_mkt.orderStatus.status == a_mkt.orderStatus.status == "Filled"
        assert b_mkt.filled() == a_mkt.filled() == 3 and len(b_mkt.fills) == len(a_mkt.fills)
        assert b_lmt.orderStatus.status == a_lmt.orderStatus.status


async def test_the_silent_client_encodes_an_order_as_the_connected_one_sends_it_and_sends_nothing():
    """The exit rehearsal's encoding (``SilentClient``): byte for byte the message the connected client writes for
    the same order, its order id aside - and nothing reaches the socket, no order id is taken."""
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib)
        silent = SilentClient(ib.client)
        sent: list[bytes] = []
        real_send = ib.client.conn.sendMsg
        ib.client.conn.sendMsg = lambda msg: (sent.append(msg), real_send(msg))[1]  # type: ignore[method-assign]
        for make in (lambda: MarketOrder("SELL", 3), lambda: LimitOrder("SELL", 2, 1.5)):
            orders: list[Order] = [make(), make()]
            for order in orders:
                order.orderRef, order.account, order.tif = "tg:x:T1:stop:1", "DU0000001", "DAY"
            next_id, before = ib.client._reqIdSeq, len(sent)
            rehearsed = silent.encode_order(contract, orders[0])
            assert rehearsed is not None and len(sent) == before and ib.client._reqIdSeq == next_id
            assert not silent.conn.isConnected()  # it never had a socket
            place_new(ib, contract, orders[1])
            [wire] = sent[before:]
            ours, theirs = rehearsed.encode().split(b"\0"), wire[4:].split(b"\0")
            assert ours[1] == b"0" and theirs[1] == str(orders[1].orderId).encode()  # the order id: none taken
            assert ours[:1] + ours[2:] == theirs[:1] + theirs[2:]
        assert gw.errors == []
