"""Whose executions a client gets: IB answers reqExecutions with the calling client id's executions only, and
the "Master API client ID" (``FakeGateway(master_client_id=...)``) with every client's - live ones too.

Why: tickguard must never take another API client's execution for its own; the fake gateway has to hand a
client exactly what IB would, or the adapter's attribution is tested against a world that does not exist.
"""

from __future__ import annotations

import asyncio

from fg_support import IbErrorCapture
from gateway_support import TIMEOUT, advance_until, connect, make_gateway, qualified, until
from ib_async import IB, ExecutionFilter, MarketOrder, Trade


async def fill(gw, ib: IB, symbol: str, qty: int, ref: str) -> Trade:
    trade = ib.placeOrder(await qualified(ib, symbol), MarketOrder("BUY", qty, orderRef=ref))
    await advance_until(gw, lambda: trade.orderStatus.status == "Filled" and bool(trade.fills), step=0.05)
    return trade


async def executions(ib: IB, flt: ExecutionFilter | None = None) -> list[tuple[int, str]]:
    fills = await asyncio.wait_for(ib.reqExecutionsAsync(flt), TIMEOUT)
    return sorted((f.execution.clientId, f.execution.orderRef) for f in fills)


async def two_clients_with_a_fill_each(master: int | None) -> None:
    with IbErrorCapture.installed() as errors:
        gw = await make_gateway(master_client_id=master).start()
        one = two = None
        try:
            await gw.advance(2.0)
            one, two = await connect(gw, 1), await connect(gw, 2)
            mine = await fill(gw, one, "AAA", 10, "mine")
            theirs = await fill(gw, two, "BBB", 7, "theirs")
            assert mine.order.orderId == theirs.order.orderId  # order ids are per client id
            await check(master, one, two)
        finally:
            for ib in (one, two):
                if ib is not None:
                    ib.disconnect()
            await gw.close()
        assert errors.unexpected() == [] and gw.errors == []


async def check(master: int | None, one: IB, two: IB) -> None:
    """Live first (reqExecutions would add what it returns to ``fills()``), then reqExecutions."""
    if master is None:
        assert [f.execution.orderRef for f in one.fills()] == ["mine"]  # client 2's fill was not sent live
        assert await executions(one) == [(1, "mine")]  # not client 2's, though nothing was filtered
        assert await executions(two) == [(2, "theirs")]
        assert await executions(one, ExecutionFilter(clientId=2)) == []  # a filter does not widen what IB shows
    else:
        await until(lambda: len(one.fills()) == 2)  # the master client got client 2's execution live
        assert sorted(f.execution.orderRef for f in one.fills()) == ["mine", "theirs"]
        assert await executions(one) == [(1, "mine"), (2, "theirs")]  # and in reqExecutions
        assert await executions(one, ExecutionFilter(clientId=2)) == [(2, "theirs")]
        assert await executions(two) == [(2, "theirs")]  # the others still only their own


async def test_req_executions_returns_only_the_calling_clients_executions() -> None:
    await two_clients_with_a_fill_each(master=None)


async def test_the_master_client_gets_every_clients_executions() -> None:
    await two_clients_with_a_fill_each(master=1)
