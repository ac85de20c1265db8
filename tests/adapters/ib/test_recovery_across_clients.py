"""Recovery through another IB client: IB shows a client only its own open orders and executions, so an engine
started on a journal through another client id cannot tell an order in flight that never reached IB from one
working under the other client.  Such an order is held (UNRECONCILED, never re-sent); through the client that
placed it, it is found working and adopted (tests the whole path: the fake gateway answers per client, as IB does)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
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


def _settings(gw: FakeGateway, journal: Path, client_id: int, host: str = "127.0.0.1"):
    # each start asks for a different span of daily bars: identical history requests within 15 s are a pacing
    # violation (162) at IB and at the fake gateway; reconciliation passes every 0.2 s
    return load(None, {"ib": {"host": host, "port": gw.port, "client_id": client_id, "account": ACCOUNT,
                              "connect_timeout_s": 5, "request_timeout_s": 5, "reconnect_initial_s": 0.05,
                              "reconnect_max_s": 0.5},
                       "engine": {"reconcile_interval_s": 0.2, "reconcile_retry_s": 0.2},
                       "journal": {"path": str(journal)}, "volatility": {"history_days": 20 + next(STARTS)}})


@contextlib.asynccontextmanager
async def _engine(gw: FakeGateway, journal: Path, client_id: int, host: str = "127.0.0.1"):
    s = _settings(gw, journal, client_id, host)
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


@contextlib.asynccontextmanager
async def _gateway():
    """A started fake gateway; at the end, no IB error the test did not expect."""
    with IbErrorCapture.installed() as errors:
        errors.allow("Peer closed connection")
        gw = await make_gateway().start()
        try:
            await gw.advance(2.0)
            yield gw
        finally:
            await gw.close()
        assert errors.unexpected() == []


async def _until(predicate, gw: FakeGateway, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await gw.advance(0.05)
        await asyncio.sleep(0.01)


async def test_an_order_working_under_another_client_is_held_not_sent_again_and_adopted_by_its_own(tmp_path):
    journal = tmp_path / "j.db"
    async with _gateway() as gw:
        key = await _placed_through_21(gw, journal)
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


def _resting(gw: FakeGateway) -> TradeRequest:
    """A long entry resting far below the market: it works and never fills."""
    far = float(round(Decimal(repr(gw.venue.last_ticks["AAA"].bid)) / 2, 2))
    return TradeRequest(symbol="AAA", side=Side.LONG, qty=Decimal(10), account=ACCOUNT, entry_type=OrderType.LIMIT,
                        limit_price=far, rules=[StopLoss(price=round(far * 0.9, 2))])


async def _placed_through_21(gw: FakeGateway, journal: Path, status: str | None = None) -> str:
    """An engine on client 21 leaves a resting entry working at IB; ``status``: its row as a cancel or send that
    was journaled and never processed leaves it.  Returns its key."""
    async with _engine(gw, journal, 21) as first:
        await _until(lambda: first.ticks.quote("AAA") is not None, gw)
        key = first.submit(_resting(gw)).entry_key
        await _until(lambda: first.executor.orders[key].status is OrderStatus.SUBMITTED, gw)
    if status is not None:
        with sqlite3.connect(journal) as conn:
            conn.execute("UPDATE orders SET status = ? WHERE order_key = ?", (status, key))
    return key


@pytest.mark.parametrize("status", ["cancelling", "submitting"])
async def test_a_held_order_is_neither_closed_nor_sent_and_every_reconciliation_reports_it(tmp_path, status):
    """A cancel journaled and never processed (``cancelling``) is not closed as cancelled - the order may still work
    under client 21 - and one journaled ``submitting`` is not re-sent; each stays open, and every reconciliation
    pass reports it (a held exit is an unprotected position: it must not go quiet after the start-up line)."""
    journal = tmp_path / "j.db"
    async with _gateway() as gw:
        key = await _placed_through_21(gw, journal, status)
        async with _engine(gw, journal, 22) as other:
            assert any("NOT re-sent" in line and key in line for line in other.recovery.lines())
            await _until(lambda: any(key in line for line in other.reconciliation.differences), gw)
            assert other.executor.orders[key].status is OrderStatus(status)
            assert _working(gw, key) == [21]


async def test_a_cancel_of_a_held_order_touches_no_order_of_this_session(tmp_path, caplog):
    """IB numbers orders per client id: the held order's id is another client's numbering, and this session soon
    hands out the same number.  A cancel of the held order (an entry timeout, a stop firing while the entry works)
    must not reach this session's order of that number - it is refused, loudly."""
    journal = tmp_path / "j.db"
    async with _gateway() as gw:
        key = await _placed_through_21(gw, journal)
        async with _engine(gw, journal, 22) as other:
            await _until(lambda: other.ticks.quote("AAA") is not None, gw)
            held_id = other.executor.orders[key].order_id
            mine = other.submit(_resting(gw)).entry_key
            await _until(lambda: other.executor.orders[mine].status is OrderStatus.SUBMITTED, gw)
            assert other.executor.orders[mine].order_id == held_id  # the numbers collide, as at IB
            other.trades.cancels.append(key)  # what an entry timeout does
            other._flush()
            for _ in range(10):
                await gw.advance(0.1)
                await asyncio.sleep(0.01)
            assert _working(gw, mine) == [22] and _working(gw, key) == [21]
            assert other.executor.orders[mine].status is OrderStatus.SUBMITTED
            assert other.executor.orders[key].status is OrderStatus.SUBMITTED
            assert "NOT cancelled - placed through IB client id 21" in caplog.text


def test_the_same_gateway_spelt_another_way_is_the_same_session():
    """``localhost`` and ``127.0.0.1`` are one gateway: a restart through the same client id with the other spelling
    must not hold (and so never send) an exit that did not reach IB; another client id or port is another session."""
    def session(host: str, client_id: int = 21, port: int = 4002) -> str:
        return IBBroker(load(None, {"ib": {"host": host, "port": port, "client_id": client_id}}).ib).session_identity

    assert session("localhost") == session("127.0.0.1") == session("::1") == session(" LOCALHOST ")
    assert session("127.0.0.1", client_id=22) != session("127.0.0.1")
    assert session("127.0.0.1", port=4001) != session("127.0.0.1")
    assert session("gateway.internal") != session("127.0.0.1")


@pytest.mark.parametrize("placed_through", ["", "IB client id 21 at 127.0.0.1:4002"])
def test_only_an_order_placed_through_another_known_session_is_held(placed_through):
    """The guard holds only what another client may hold: through the same client, from a row from before the column,
    or on a broker that names no session, an order the broker does not know is re-sent as recovery always did."""
    from tickguard.runtime.order_record import holds_elsewhere

    assert holds_elsewhere(placed_through, "IB client id 21 at 127.0.0.1:4002") is False
    assert holds_elsewhere("IB client id 21 at 127.0.0.1:4002", "IB client id 22 at 127.0.0.1:4002") is True
    assert holds_elsewhere("IB client id 21 at 127.0.0.1:4002", "") is False  # a broker that says nothing
