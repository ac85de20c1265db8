"""Recovery through another IB client: IB shows a client only its own open orders and executions, so an engine
started on a journal through another client id cannot tell an order in flight that never reached IB from one
working under the other client.  Such an order is held (UNRECONCILED, never re-sent); through the client that
placed it, it is found working and adopted (tests the whole path: the fake gateway answers per client, as IB does)."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path

import pytest
from fg_support import IbErrorCapture
from gateway_support import make_gateway

from ibfake.server import FakeGateway
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import OrderType, Side
from tickguard.core.order_state import OrderStatus
from tickguard.core.trades import TradeRequest
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import open_journal

ACCOUNT = "DU0000001"


STARTS = iter(range(100))


def _settings(gw: FakeGateway, journal: Path, client_id: int):
    # each start asks for a different span of daily bars: identical history requests within 15 s are a pacing
    # violation (162) at IB and at the fake gateway
    return load(None, {"ib": {"port": gw.port, "client_id": client_id, "account": ACCOUNT, "connect_timeout_s": 5,
                              "request_timeout_s": 5, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5},
                       "journal": {"path": str(journal)}, "volatility": {"history_days": 20 + next(STARTS)}})


@contextlib.asynccontextmanager
async def _engine(gw: FakeGateway, journal: Path, client_id: int):
    s = _settings(gw, journal, client_id)
    engine = Engine(s, IBBroker(s.ib), None, open_journal(s, kind="live"))
    try:
        await asyncio.wait_for(engine.start(["AAA"]), 20)
        task = asyncio.create_task(engine.run_until(2**62))
        try:
            yield engine
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await engine.broker.close()
        engine.journal.close()


def _working(gw: FakeGateway, ref: str) -> list[int]:
    return [o.client_id for o in gw.book.orders.values() if o.working and o.request.order_ref == ref]


async def _until(predicate, gw: FakeGateway, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await gw.advance(0.05)
        await asyncio.sleep(0.01)


async def test_an_order_working_under_another_client_is_held_not_sent_again_and_adopted_by_its_own(tmp_path):
    journal = tmp_path / "j.db"
    with IbErrorCapture.installed() as errors:
        errors.allow("Peer closed connection")
        gw = await make_gateway().start()
        try:
            await gw.advance(2.0)
            async with _engine(gw, journal, 21) as first:
                await _until(lambda: first.ticks.quote("AAA") is not None, gw)
                far = float(round(Decimal(repr(gw.venue.last_ticks["AAA"].bid)) / 2, 2))
                trade = first.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=Decimal(10), account=ACCOUNT,
                                                  entry_type=OrderType.LIMIT, limit_price=far,
                                                  rules=[StopLoss(price=round(far * 0.9, 2))]))
                key = trade.entry_key
                await _until(lambda: first.executor.orders[key].status is OrderStatus.SUBMITTED, gw)
            assert _working(gw, key) == [21]  # the engine is gone; its resting entry works on at IB

            async with _engine(gw, journal, 22) as other:  # a restart through another client id
                lines = other.recovery.lines()
                assert any(line.startswith("UNRECONCILED") and key in line and "IB client id 21" in line
                           and "NOT re-sent" in line for line in lines), lines
                assert other.executor.orders[key].status is OrderStatus.SUBMITTED  # left open, not closed
                await gw.advance(1.0)
                assert _working(gw, key) == [21]  # never sent a second time

            async with _engine(gw, journal, 21) as own:  # through the client that placed it: found, adopted
                assert key in " ".join(own.recovery.lines())
                assert not any("NOT re-sent" in line for line in own.recovery.lines())
                assert own.executor.orders[key].order_id is not None
                assert _working(gw, key) == [21]
        finally:
            await gw.close()
        assert errors.unexpected() == []


@pytest.mark.parametrize("placed_through", ["", "IB client id 21 at 127.0.0.1:4002"])
def test_an_order_never_acknowledged_through_this_client_is_sent_again_as_before(placed_through):
    """The guard holds only what another client may hold: the same client (or a row from before the column) re-sends
    an order the broker does not know, as recovery always did."""
    from tickguard.runtime.recovery import holds_elsewhere

    assert holds_elsewhere(placed_through, "IB client id 21 at 127.0.0.1:4002") is False
    assert holds_elsewhere("IB client id 21 at 127.0.0.1:4002", "IB client id 22 at 127.0.0.1:4002") is True
    assert holds_elsewhere("IB client id 21 at 127.0.0.1:4002", "") is False  # a broker that says nothing
