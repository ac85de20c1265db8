"""The IB adapter through the real ib_async client, over a real socket, against the fake IB Gateway.

The gateway runs in virtual time driven by the test (speed 0); the engine runs its normal loop as a task.
Every test fails on an unexpected ERROR logged by ib_async (its decoder otherwise hides malformed
messages), and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from fg_support import IbErrorCapture
from gateway_support import make_gateway
from ib_engine_support import engine_on_gateway as shared_engine_on_gateway
from ib_engine_support import until

from ibfake.server import FakeGateway
from tickguard.adapters.ib.ib_client import IBBroker, ib_number
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss, TakeProfit, TimeStop
from tickguard.core.model import Side, Tick
from tickguard.core.price_grid import CENT
from tickguard.core.trades import TradeRequest
from tickguard.runtime.engine import Engine

ACCOUNT = "DU0000001"
EXPECTED_ERRORS = ("Error 1100", "Error 1101", "Error 1102", "Peer closed connection", "Error 202",
                   "Error 2103", "Error 2104", "Canceled order", "Error 201", "Error 200",
                   "Error 10147", "Error 10148", "connection", "Connection")


@contextlib.asynccontextmanager
async def engine_on_gateway(**ib: Any) -> AsyncIterator[tuple[FakeGateway, Engine, IbErrorCapture]]:
    async with shared_engine_on_gateway(["AAA", "BBB", "NOPE"], client_id=11, allowed=EXPECTED_ERRORS,
                                        settings={"ib": ib}) as run:
        assert list(run.failed) == ["NOPE"] and "no security definition" in run.failed["NOPE"]
        yield run.gw, run.engine, run.errors


def gateway_position(gw: FakeGateway, symbol: str) -> float:
    return gw.venue.positions(ACCOUNT).get(symbol, 0.0)


def refs_sent(gw: FakeGateway) -> list[str]:
    return [o.order.ref for o in gw.venue.exchange.orders.values() if o.status != "rejected"]


def req(symbol: str = "AAA", side: Side = Side.LONG, rules: list | None = None, **kw: Any) -> TradeRequest:
    return TradeRequest(symbol=symbol, side=side, qty=100, account=ACCOUNT,
                        rules=rules or [StopLoss(distance=0.05), TakeProfit(distance=0.05)], **kw)


async def test_enter_exit_fill_and_commissions_through_the_gateway():
    async with engine_on_gateway() as (gw, engine, _):
        trade = engine.submit(req())
        await until(lambda: trade.state.value == "closed", gw)
        assert trade.entry_filled == 100 and trade.exited == 100
        await until(lambda: trade.commissions >= 2.0, gw)  # entry and exit commission reports
        keys = [r.intent.key for r in engine.executor.orders.values()]
        assert sorted(refs_sent(gw)) == sorted(keys)  # the idempotency key travelled in orderRef
        assert gateway_position(gw, "AAA") == 0
        assert engine.broker.state.connected


async def test_short_trade_and_contract_cache_counts():
    async with engine_on_gateway() as (gw, engine, _):
        trade = engine.submit(req("BBB", Side.SHORT))
        await until(lambda: trade.state.value == "closed", gw)
        broker: IBBroker = engine.broker  # type: ignore[assignment]
        stats = broker.contract_cache.stats
        assert stats.misses >= 3 and stats.hits >= 2  # AAA/BBB/NOPE loaded once, then served from cache


async def test_disconnect_with_a_fill_while_away_is_applied_once():
    async with engine_on_gateway(reconnect_initial_s=0.3) as (gw, engine, _):
        trade = engine.submit(req(rules=[StopLoss(distance=3.0)]))
        await gw.wait_for(lambda: any(o.order.ref == trade.entry_key for o in gw.venue.exchange.orders.values()))
        await gw.drop_connections()
        await gw.advance(2.0)  # the entry fills at the exchange while the engine is away
        assert gateway_position(gw, "AAA") == 100
        broker: IBBroker = engine.broker  # type: ignore[assignment]
        await until(lambda: broker.state.reconnects >= 1, gw, timeout=20)
        await until(lambda: trade.entry_filled == 100, gw)
        await gw.advance(5.0)
        await asyncio.sleep(0.2)
        assert trade.entry_filled == 100  # applied once, not again on later syncs
        assert trade.state.value == "open" and refs_sent(gw).count(trade.entry_key) == 1


async def test_exit_in_flight_across_a_disconnect_is_not_sent_twice():
    async with engine_on_gateway(reconnect_initial_s=0.3) as (gw, engine, _):
        trade = engine.submit(req(rules=[StopLoss(distance=3.0), TimeStop(after_seconds=0.3)]))
        await until(lambda: trade.state.value == "open", gw)
        await until(lambda: trade.closing, None, timeout=10)  # time stop fires (wall clock)
        exit_key = next(k for k in engine.executor.orders if k.endswith(":time:1"))
        await gw.wait_for(lambda: exit_key in refs_sent(gw))
        await gw.drop_connections()
        await gw.advance(2.0)
        await until(lambda: trade.state.value == "closed", gw, timeout=20)
        assert refs_sent(gw).count(exit_key) == 1 and gateway_position(gw, "AAA") == 0


async def test_1101_resubscribes_and_quotes_flow_again():
    async with engine_on_gateway() as (gw, engine, _):
        before = engine.ticks.counters.accepted
        gw.connectivity_restored(data_lost=True)  # 1101: the gateway dropped every subscription
        await until(lambda: any(code == 1101 for _, code, _ in engine.stats.notices), gw)
        mark = engine.ticks.counters.accepted
        await until(lambda: engine.ticks.counters.accepted > mark + 5, gw)
        assert engine.ticks.counters.accepted > before


async def test_1100_stops_trusting_the_feed_until_restored():
    async with engine_on_gateway() as (gw, engine, _):
        broker: IBBroker = engine.broker  # type: ignore[assignment]
        gw.connectivity_lost()
        await until(lambda: not broker.state.feed_trusted, gw)
        frozen = engine.ticks.counters.accepted
        await gw.advance(3.0)
        await asyncio.sleep(0.1)
        assert engine.ticks.counters.accepted == frozen  # quotes during 1100 are not acted on
        gw.connectivity_restored(data_lost=False)
        await until(lambda: broker.state.feed_trusted, gw)
        await until(lambda: engine.ticks.counters.accepted > frozen, gw)


async def test_farm_outage_without_recovery_is_detected_and_exits_still_fill():
    async with engine_on_gateway(stale_feed_s=0.3) as (gw, engine, _):
        broker: IBBroker = engine.broker  # type: ignore[assignment]
        trade = engine.submit(req(rules=[StopLoss(distance=3.0), TimeStop(after_seconds=0.5)]))
        await until(lambda: trade.state.value == "open", gw)
        gw.farm_outage()  # 2103 and no 2104: quotes silently stop
        await until(lambda: not broker.state.farm_ok, gw)
        await until(lambda: set(broker.silent_symbols(0.3)) >= {"AAA", "BBB"}, gw)
        await until(lambda: trade.state.value == "closed", gw, timeout=20)  # the time stop still exits
        assert gateway_position(gw, "AAA") == 0 and trade.exited == 100


async def test_rejected_order_reaches_the_trade_with_its_reason():
    async with engine_on_gateway() as (gw, engine, _):
        gw.reject_next("no trading permissions")
        trade = engine.submit(req())
        await until(lambda: trade.state.value == "rejected", gw)
        assert "no trading permissions" in trade.reason


async def test_what_if_and_positions():
    async with engine_on_gateway() as (gw, engine, _):
        from tickguard.adapters.broker import BrokerOrder
        from tickguard.core.model import Action, OrderType
        broker: IBBroker = engine.broker  # type: ignore[assignment]
        w = await asyncio.wait_for(broker.what_if(BrokerOrder("wi", ACCOUNT, "AAA", Action.BUY, 100,
                                                              OrderType.MARKET)), 10)
        assert w.accepted and w.init_margin_change > 0 and w.commission > 0
        trade = engine.submit(req(rules=[StopLoss(distance=3.0)]))
        await until(lambda: trade.state.value == "open", gw)
        await until(lambda: any(p.contract.symbol == "AAA" and p.position == 100 for p in broker.ib.positions()), gw)
        assert (await broker.positions(ACCOUNT)).get("AAA") == 100
        values = await broker.account_values(ACCOUNT)
        assert values["NetLiquidation"] > 0 and values["BuyingPower"] > 0
        assert values["GrossPositionValue"] > 0  # the position is in the margin figures


# ------------------------------------------------------------------------------------------------ bursts
# Several quotes of one symbol in ONE socket write (TWS does this under load): ib_async decodes them in one read
# and its ticker keeps only the last; the adapter must replay ``ticker.ticks`` to see the others.


@contextlib.asynccontextmanager
async def broker_on_gateway(symbol: str = "AAA") -> AsyncIterator[tuple[FakeGateway, IBBroker, list[int]]]:
    """A connected IBBroker subscribed to ``symbol``; also yields, per pendingTickersEvent, how many price
    ticks ib_async held for ``symbol`` (to show a burst came in one read)."""
    with IbErrorCapture.installed() as errors:
        gw = await make_gateway().start()
        await gw.advance(2.0)
        settings = load(None, {"ib": {"port": gw.port, "client_id": 12, "account": ACCOUNT,
                                      "connect_timeout_s": 5, "request_timeout_s": 5}})
        broker = IBBroker(settings.ib)
        per_read: list[int] = []

        def count(tickers: set[Any]) -> None:
            per_read.extend(sum(1 for t in tk.ticks if t.tickType in (1, 2, 4)) for tk in tickers
                            if tk.contract.symbol == symbol)

        broker.ib.pendingTickersEvent += count
        try:
            await asyncio.wait_for(broker.connect(), 15)
            await asyncio.wait_for(broker.subscribe(symbol), 10)
            yield gw, broker, per_read
        finally:
            await broker.close()
            await gw.close()
        assert errors.unexpected() == []
        assert gw.errors == []


async def broker_ticks(broker: IBBroker, until_quote: tuple[float, float], timeout: float = 5.0) -> list[Tick]:
    """Engine Ticks from the broker until one carries ``until_quote`` (bid, ask)."""
    got: list[Tick] = []

    async def loop() -> None:
        while not got or prices(got[-1]) != until_quote:
            got.extend(e for e in await broker.next_events(broker.now_ns() + 1_000_000_000) if isinstance(e, Tick))

    await asyncio.wait_for(loop(), timeout)
    return got


def prices(tick: Tick) -> tuple[float, float]:
    """A Tick's bid and ask as the gateway's doubles (its symbols trade on a 0.01 grid)."""
    return float(CENT.price(tick.bid)), float(CENT.price(tick.ask))


def burst_quotes(gw: FakeGateway, symbol: str, dip_bid: float) -> list[tuple[float, float]]:
    """[normal, dip, recovery]: a cent above the current quote, a dip to ``dip_bid``, back to the quote."""
    cur = gw.venue.last_ticks[symbol]
    return [(round(cur.bid + 0.01, 2), round(cur.ask + 0.01, 2)), (dip_bid, round(dip_bid + 0.02, 2)),
            (cur.bid, cur.ask)]


async def test_a_burst_in_one_read_yields_a_tick_for_every_quote_in_order():
    async with broker_on_gateway() as (gw, broker, per_read):
        cur = gw.venue.last_ticks["AAA"]
        before = await broker_ticks(broker, (cur.bid, cur.ask))  # the quote sent on subscription
        normal, dip, recovery = quotes = burst_quotes(gw, "AAA", round(cur.bid - 1.0, 2))
        per_read.clear()
        assert gw.burst("AAA", quotes) == 1
        ticks = await broker_ticks(broker, recovery)
        assert per_read == [6]  # bid + ask of three quotes, decoded in a single read
        pairs = [prices(t) for t in ticks]
        assert len(ticks) == 6 and pairs[1] == normal and pairs[3] == dip and pairs[5] == recovery
        assert min(p[0] for p in pairs) == dip[0]  # the dip is seen although the ticker ends recovered
        assert all(t.bid <= t.ask for t in ticks)  # no half-applied quote is crossed
        seqs = [t.seq for t in before + ticks]
        assert seqs == sorted(set(seqs))  # one sequence number each, in arrival order
        assert len({t.ts_ns for t in ticks}) == 1 and ticks[0].ts_ns <= ticks[0].recv_ns  # one read, its time


async def test_a_stop_touched_only_inside_a_burst_fires():
    """Real money: a dip below the stop and its recovery arrive in one read; the exit must still go out."""
    async with engine_on_gateway() as (gw, engine, _):
        level = round(gw.venue.last_ticks["AAA"].bid * 0.97, 2)
        trade = engine.submit(req(rules=[StopLoss(price=level)]))
        await until(lambda: trade.state.value == "open", gw)
        quotes = burst_quotes(gw, "AAA", round(level - 0.05, 2))
        assert quotes[0][0] > level and quotes[2][0] > level  # only the dip crosses
        gw.burst("AAA", quotes)
        await until(lambda: trade.closing, None, timeout=5)  # no virtual time passes: only the burst can do it
        exit_keys = [k for k in engine.executor.orders if k != trade.entry_key]
        await gw.wait_for(lambda: any(k in refs_sent(gw) for k in exit_keys), timeout=5)
        closing = next(h for h in trade.history if h["event"] == "closing")
        assert closing["rule"] == "stop_loss" and Decimal(closing["price"]) == Decimal(str(quotes[1][0]))
        await until(lambda: trade.state.value == "closed", gw)
        assert gateway_position(gw, "AAA") == 0


def test_ib_unset_double_is_unknown_not_a_number():
    assert ib_number(1.7976931348623157e308) != ib_number(1.7976931348623157e308)  # NaN
    assert ib_number("") != ib_number("")
    assert ib_number("12.5") == 12.5


def test_reconnect_delay_grows_with_jitter_and_is_capped():
    import random

    settings = load(None, {"ib": {"reconnect_initial_s": 1, "reconnect_max_s": 8, "reconnect_jitter": 0.2}})
    broker = IBBroker.__new__(IBBroker)
    broker.cfg = settings.ib
    broker._rng = random.Random(1)
    delays = [broker.reconnect_delay(n) for n in range(6)]
    for n, d in enumerate(delays):
        base = min(8, 2**n)
        assert base * 0.8 <= d <= base * 1.2
    assert delays[-1] <= 9.6


async def test_duplicate_client_id_is_a_clear_connection_error_at_once():
    """IB closes the socket after 326 but ib_async waits for its start-up until the timeout: the adapter must cut
    that short and not retry (only the user can free the client id) - with a 60 s timeout and 5 attempts, the
    error must still come within the 10 s allowed here."""
    from tickguard.adapters.broker import BrokerError

    async with engine_on_gateway() as (gw, engine, errors):
        errors.allow("Error 326")
        errors.allow("Peer closed connection")
        settings = load(None, {"ib": {"port": gw.port, "client_id": 11, "connect_attempts": 5,
                                      "connect_timeout_s": 60}})
        second = IBBroker(settings.ib)
        with pytest.raises(BrokerError, match=r"IB error 326: client id 11 is already in use"):
            await asyncio.wait_for(second.connect(), 10)
        await second.close()
        assert engine.broker.state.connected  # the first connection is unaffected


async def test_commissions_after_three_reconnects_equal_those_charged():
    """At each reconnect ib_async asks IB for the day's executions again, and IB sends every commission report
    again with them: the journaled commissions must stay what was charged (once per execution id)."""
    async with engine_on_gateway() as (gw, engine, errors):
        errors.allow("Peer closed connection")
        trade = engine.submit(req())
        await until(lambda: trade.state.value == "closed", gw)
        charged = sum(Decimal(str(r.commission)) for r in gw.book.executions)
        await until(lambda: trade.commissions == charged, gw)
        broker: IBBroker = engine.broker  # type: ignore[assignment]
        for n in range(1, 4):
            assert await gw.drop_connections() == 1
            await until(lambda n=n: broker.state.reconnects >= n and broker.state.connected, gw, timeout=20)
            await gw.advance(1.0)
        await until(lambda: engine.executor.replays >= 3, gw)  # each reconnect brought the executions again
        assert trade.commissions == charged and charged > 0
        assert sum(r.commission for r in engine.executor.orders.values()) == charged


async def test_a_deadline_already_due_still_lets_the_socket_be_read():
    """An engine step due at once, step after step (the shadow checker's look is sliced over steps and keeps its
    deadline at now), must not keep the event loop from reading the socket: each call with a past deadline
    yields to the loop, so a quote the gateway wrote is handed over within a couple of calls, not after the
    last due step (measured: quotes held ~20 ms while 100 such steps ran back to back)."""
    async with broker_on_gateway() as (gw, broker, _):
        cur = gw.venue.last_ticks["AAA"]
        await broker_ticks(broker, (cur.bid, cur.ask))  # the quote sent on subscription
        quote = (round(cur.bid - 0.5, 2), round(cur.ask - 0.5, 2))
        assert gw.burst("AAA", [quote]) == 1  # written to the socket now
        calls, got = 0, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not any(isinstance(e, Tick) and prices(e) == quote for e in got):
            assert loop.time() < deadline, f"the quote was not read in {calls} calls with a past deadline"
            got.extend(await broker.next_events(broker.now_ns() - 1))
            calls += 1
        assert calls <= 20  # a few loop turns; before the fix: never, the loop was never given one


async def test_waits_for_one_deadline_share_one_timer_and_every_deadline_is_kept():
    """Per socket read the engine waits again, nearly always for the same next deadline: one timer serves those
    waits (a timer made and cancelled per wait was a tenth of the loop's overhead) - and a new deadline, earlier
    or later, or one already fired, is still kept."""
    async with broker_on_gateway() as (gw, broker, _):
        cur = gw.venue.last_ticks["AAA"]
        await broker_ticks(broker, (cur.bid, cur.ask))
        far = broker.now_ns() + 60 * 10**9
        timers = []
        for k in range(1, 4):
            quote = (round(cur.bid - 0.1 * k, 2), round(cur.ask - 0.1 * k, 2))
            assert gw.burst("AAA", [quote]) == 1
            got: list = []
            while not any(isinstance(e, Tick) and prices(e) == quote for e in got):
                got.extend(await asyncio.wait_for(broker.next_events(far), 5))
                timers.append(broker._timer)
        assert len(timers) >= 3 and all(t is timers[0] for t in timers) and not timers[0].cancelled()
        for wait_ms in (50, 80, 30):  # earlier than the armed one, then later, then earlier again
            deadline = broker.now_ns() + wait_ms * 1_000_000
            while broker.now_ns() < deadline:  # (an event arriving meanwhile returns early: wait again)
                await asyncio.wait_for(broker.next_events(deadline), 5)  # never the 60 s of the far one
        assert timers[0].cancelled()
        deadline = broker.now_ns() + 50_000_000
        broker._arm(asyncio.get_running_loop(), deadline, 0.001)  # a timer for it that fires early (clock skew)
        await asyncio.sleep(0.02)
        while broker.now_ns() < deadline:  # the same deadline, no timer left for it: armed again
            await asyncio.wait_for(broker.next_events(deadline), 5)
        deadline = broker.now_ns() + 50_000_000
        broker._arm(asyncio.get_running_loop(), deadline, 0.05)
        assert broker._timer is not None
        broker._timer.cancel()  # as if it had been armed on a loop that is gone (an earlier asyncio.run)
        broker._timer_loop = object()  # type: ignore[assignment]
        while broker.now_ns() < deadline:  # the same deadline on this loop: armed here
            await asyncio.wait_for(broker.next_events(deadline), 5)
