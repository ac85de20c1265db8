"""IB's 50 messages/second rule, enforced per connection by the fake gateway.

Why: invariant 4 of the design (the engine never exceeds the broker's message rate) is only tested if
the gateway punishes a violation the way IB does: error 100 for every message over the limit (an
order refused this way is never executed), and a dropped connection if the violations persist.
ib_async throttles itself to 45/s, so the tests switch that off (``MaxRequests = 0``). The gateway's
wall clock is injected and frozen, so "within one second" does not depend on machine speed.
"""

from __future__ import annotations

from gateway_support import advance_until, qualified, session, until
from ib_async import MarketOrder

from ibfake.clock import PacingLimits


class FrozenWall:
    """A wall clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_more_than_50_messages_in_a_second_get_error_100_and_are_not_executed() -> None:
    wall = FrozenWall()
    async with session(wall=wall) as (gw, ib, errors):
        errors.allow("Error 100")
        contract = await qualified(ib, "AAA")
        refused: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, c: refused.append(req_id) if code == 100 else None
        used = sum(s.messages_received for s in gw.sessions)  # the connect sync and the qualification
        ib.client.MaxRequests = 0  # bypass ib_async's own 45/s throttle
        trades = [ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef=f"burst-{i}")) for i in range(60)]
        expected_refusals = used + 60 - 50
        await until(lambda: len(refused) == expected_refusals)
        assert refused == [t.order.orderId for t in trades[-expected_refusals:]]
        await advance_until(gw, lambda: all(t.isDone() for t in trades), step=0.05)
        filled = [t for t in trades if t.orderStatus.status == "Filled"]
        assert len(filled) == 60 - expected_refusals == gw.book.stats.placed
        assert all(t.orderStatus.status == "Cancelled" and not t.fills for t in trades[-expected_refusals:])
        assert ib.isConnected() and gw.pacing_drops == 0  # one violation is not yet a reason to drop


async def test_persistent_violations_drop_the_connection() -> None:
    wall = FrozenWall()
    limits = PacingLimits(max_msgs_per_s=20, violations_to_drop=3, violation_window_s=5.0)
    async with session(wall=wall, pacing=limits) as (gw, ib, errors):
        errors.allow("Error 100")
        errors.allow("Peer closed connection")
        ib.client.MaxRequests = 0
        for burst in range(3):
            wall.now += 1.5  # a fresh one-second window: each burst is a separate violation
            for _ in range(25):
                ib.client.reqIds(1)
            if burst < 2:
                await gw.wait_for(lambda b=burst: sum(s.pacer.refused for s in gw.sessions) == 5 * (b + 1))
                assert ib.isConnected()
        await until(lambda: not ib.isConnected())
        assert gw.pacing_drops == 1 and not gw.sessions


async def test_spread_out_messages_are_never_refused() -> None:
    wall = FrozenWall()
    async with session(wall=wall, pacing=PacingLimits(max_msgs_per_s=10)) as (gw, ib, _errors):
        ib.client.MaxRequests = 0
        start = gw.sessions[0].messages_received
        for burst in range(1, 6):
            wall.now += 1.01
            for _ in range(10):
                ib.client.reqIds(1)
            await gw.wait_for(lambda b=burst: gw.sessions[0].messages_received == start + 10 * b)
        assert gw.sessions[0].pacer.refused == 0
