"""Error 110: the fake gateway refuses a price off the contract's tick grid the way IB does.

Why: an engine that sends ``169.39000000000001`` or ``100.10`` on a 0.25 tick gets its order refused at IB;
a fake that accepted it would hide exactly that bug. IB answers a new off-grid order with error 110 alone
(no openOrder, no permId), and ib_async 2.1.0 (``Wrapper.error``) turns a 110 for a trade still at
PendingSubmit into Cancelled; a 110 for a modification only refuses the modification (the order stays
live; ib_async records ValidationError). Everything here goes through the real ib_async client.
"""

from __future__ import annotations

import asyncio

import pytest
from gateway_support import TIMEOUT, advance_until, qualified, session, until
from ib_async import IB, LimitOrder, Trade

from ibfake.accounts import OFF_TICK, price_on_tick
from ibfake.server import FakeGateway
from tickguard.adapters.sim.market import SymbolSpec

QUARTER = [SymbolSpec("QTR", 200_001, 100.0, 0.02, min_tick=0.25), SymbolSpec("AAA", 200_002, 100.0, 0.02)]


def error_codes(ib: IB) -> list[tuple[int, int, str]]:
    codes: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, _c: codes.append((req_id, code, msg))
    return codes


@pytest.mark.parametrize(
    ("text", "tick", "on_grid"),
    [
        ("100.01", 0.01, True),
        ("100.003", 0.01, False),
        ("169.39", 0.01, True),
        ("169.39000000000001", 0.01, False),  # str(169.37 + 0.02): no float tolerance
        ("100.25", 0.25, True),
        ("100.10", 0.25, False),
        ("600000.0", 0.01, True),
        ("1.2345", 0.0001, True),
        ("1.23455", 0.0001, False),
        ("1e-05", 0.0001, False),
        ("0.05", 0.05, True),
        ("", 0.01, True),  # unset price
        ("Infinite", 0.01, False),
    ],
)
def test_price_on_tick_is_exact_on_the_wire_text(text: str, tick: float, on_grid: bool) -> None:
    assert price_on_tick(text, tick) is on_grid


async def _refused(gw: FakeGateway, trade: Trade, codes: list[tuple[int, int, str]]) -> None:
    await advance_until(gw, lambda: trade.isDone() and codes, step=0.05)
    assert codes == [(trade.order.orderId, 110, OFF_TICK)]
    assert trade.orderStatus.status == "Cancelled" and not trade.fills
    assert trade.log[-1].errorCode == 110
    assert not gw.book.orders and gw.book.stats.refused_price == 1  # never an order: no permId, no openOrder
    assert not gw.venue.exchange.orders


async def test_off_grid_limit_on_a_cent_tick_gets_110_and_ends_cancelled() -> None:
    async with session() as (gw, ib, errors):
        errors.allow("Error 110")
        contract = await qualified(ib, "AAA")
        codes = error_codes(ib)
        trade = ib.placeOrder(contract, LimitOrder("BUY", 10, 100.003, orderRef="off"))
        await _refused(gw, trade, codes)


async def test_float_noise_is_off_grid_too() -> None:
    async with session() as (gw, ib, errors):
        errors.allow("Error 110")
        contract = await qualified(ib, "AAA")
        codes = error_codes(ib)
        price = 169.37 + 0.02
        assert str(price) == "169.39000000000001"  # what ib_async writes on the wire
        trade = ib.placeOrder(contract, LimitOrder("SELL", 10, price))
        await _refused(gw, trade, codes)


async def test_off_grid_limit_on_a_quarter_tick_gets_110_and_on_grid_is_accepted() -> None:
    async with session(symbols=QUARTER) as (gw, ib, errors):
        errors.allow("Error 110")
        contract = await qualified(ib, "QTR")
        codes = error_codes(ib)
        refused = ib.placeOrder(contract, LimitOrder("BUY", 10, 100.10, orderRef="off"))
        await _refused(gw, refused, codes)
        bid = gw.venue.last_ticks["QTR"].bid
        assert price_on_tick(str(bid), 0.25)  # the venue quotes on the grid
        resting = round(bid - 5.0, 2)  # a whole number of quarters below the bid: on the grid, rests
        accepted = ib.placeOrder(contract, LimitOrder("BUY", 10, resting, orderRef="on"))
        await advance_until(gw, lambda: accepted.orderStatus.status == "Submitted", step=0.05)
        assert codes == [(refused.order.orderId, 110, OFF_TICK)]  # nothing new
        assert [o.request.lmt_price for o in gw.book.working_orders()] == [resting]


async def test_off_grid_modification_is_refused_and_the_order_keeps_its_price() -> None:
    async with session() as (gw, ib, _errors):
        contract = await qualified(ib, "AAA")
        codes = error_codes(ib)
        far = round(gw.venue.last_ticks["AAA"].bid * 0.5, 2)
        order = LimitOrder("BUY", 10, far, orderRef="mod")
        trade = ib.placeOrder(contract, order)
        await advance_until(gw, lambda: trade.orderStatus.status == "Submitted", step=0.05)
        order.lmtPrice = far + 0.005
        ib.placeOrder(contract, order)
        await advance_until(gw, lambda: codes, step=0.05)
        assert codes == [(order.orderId, 110, OFF_TICK)]
        assert trade.orderStatus.status == "ValidationError"  # ib_async: 110 on a live order is a warning
        [working] = gw.book.working_orders()
        assert working.request.lmt_price == far and working.status == "Submitted"
        assert gw.book.stats.modified == 0


async def test_off_grid_what_if_gets_110() -> None:
    async with session() as (gw, ib, errors):
        errors.allow("Error 110")
        contract = await qualified(ib, "AAA")
        codes = error_codes(ib)
        state = await asyncio.wait_for(ib.whatIfOrderAsync(contract, LimitOrder("BUY", 10, 100.003)), TIMEOUT)
        assert state == []  # ib_async ends the request without an answer
        await until(lambda: codes)
        assert [c[1:] for c in codes] == [(110, OFF_TICK)]
        assert not gw.book.orders
