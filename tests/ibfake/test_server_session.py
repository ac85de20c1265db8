"""The fake gateway through the real ib_async client: sync, contracts, history, quotes, system messages.

Why: the engine's IB adapter is only as trustworthy as the gateway it is tested against, so each
behaviour is checked end to end — real ``IB`` object, real socket, no ERROR in ib_async's log.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from fg_support import IbErrorCapture
from gateway_support import TIMEOUT, advance_until, connect, make_gateway, qualified, session, stock, until
from ib_async import IB

from ibfake.server import DEFAULT_ACCOUNT, FakeGateway


async def test_connect_completes_the_full_sync() -> None:
    async with session() as (gw, ib, _errors):
        assert ib.isConnected() and ib.client.serverVersion() == 178
        assert ib.managedAccounts() == [DEFAULT_ACCOUNT]
        tags = {v.tag for v in ib.accountValues()}
        assert {"NetLiquidation", "BuyingPower", "ExcessLiquidity", "AvailableFunds"} <= tags
        assert ib.positions() == [] and ib.openTrades() == [] and ib.fills() == []
        assert gw.client_ids() == [1]
        assert await asyncio.wait_for(ib.reqCurrentTimeAsync(), TIMEOUT) == gw.now.astimezone(dt.UTC).replace(
            microsecond=0
        )


async def test_qualify_known_and_unknown_symbols() -> None:
    async with session() as (gw, ib, errors):
        errors.allow("Error 200")
        known, unknown = stock("BBB"), stock("NOPE")
        result = await asyncio.wait_for(ib.qualifyContractsAsync(known, unknown), TIMEOUT)
        assert result == [known, None]
        spec = gw.venue.specs["BBB"]
        assert known.conId == spec.con_id and known.primaryExchange == "NASDAQ"
        details = await asyncio.wait_for(ib.reqContractDetailsAsync(stock("CCC")), TIMEOUT)
        assert details[0].minTick == gw.venue.specs["CCC"].min_tick


async def test_historical_daily_and_minute_bars() -> None:
    async with session() as (gw, ib, _errors):
        contract = stock("AAA")
        daily = await asyncio.wait_for(
            ib.reqHistoricalDataAsync(contract, "", "20 D", "1 day", "TRADES", True), TIMEOUT
        )
        # "20 D" of daily bars is a calendar span, as IB reads it: the sessions of the last 20 days, not 20 bars
        today = gw.now.date()
        window = [today - dt.timedelta(days=n) for n in range(20)]
        assert [b.date for b in daily] == sorted(d for d in window if d.weekday() < 5) and len(daily) < 20
        assert all(isinstance(b.date, dt.date) and b.low <= min(b.open, b.close) for b in daily)
        assert daily[-1].date == gw.now.date()  # today's bar, built from the live minutes

        await gw.advance(150)  # a few live minutes on top of the synthetic backfill
        minutes = await asyncio.wait_for(
            ib.reqHistoricalDataAsync(contract, "", "1 D", "1 min", "TRADES", True), TIMEOUT
        )
        assert len(minutes) >= 3
        times = [b.date for b in minutes]
        assert times == sorted(times) and all(isinstance(t, dt.datetime) and t.tzinfo for t in times)
        assert times[-1] < gw.now and all(b.high >= b.low for b in minutes)
        hourly = await asyncio.wait_for(
            ib.reqHistoricalDataAsync(contract, "", "2 D", "1 hour", "MIDPOINT", True), TIMEOUT
        )
        assert 1 <= len(hourly) <= 16


async def test_quotes_stream_when_time_advances_and_stop_during_a_farm_outage() -> None:
    async with session() as (gw, ib, _errors):
        codes: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        ticker = ib.reqMktData(await qualified(ib, "AAA"))
        await until(lambda: ticker.bid > 0 and ticker.ask > 0)  # the current quote comes at once
        assert ticker.marketDataType == 1
        updates = 0

        def count(_ticker: object) -> None:
            nonlocal updates
            updates += 1

        ticker.updateEvent += count
        await advance_until(gw, lambda: updates >= 3)
        tick = gw.venue.last_ticks["AAA"]
        await until(lambda: (ticker.bid, ticker.ask) == (tick.bid, tick.ask))

        gw.farm_outage(["AAA"])
        await until(lambda: 2103 in codes)
        frozen = updates
        await gw.advance(5)
        await asyncio.sleep(0.05)  # give stray ticks a chance to arrive (there must be none)
        assert updates == frozen
        assert gw.venue.last_ticks["AAA"].ts_ns > tick.ts_ns  # the market moved meanwhile

        gw.farm_restored(["AAA"])
        await until(lambda: 2104 in codes and updates > frozen)
        await until(lambda: ticker.bid == gw.venue.last_ticks["AAA"].bid)


async def test_system_messages_reach_error_event() -> None:
    async with session() as (gw, ib, errors):
        for code in (1100, 1101, 1102):  # ib_async logs these at ERROR level
            errors.allow(f"Error {code}, reqId -1")
        seen: list[tuple[int, int]] = []
        ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code))
        gw.connectivity_lost()
        gw.connectivity_restored(data_lost=True)
        gw.connectivity_restored()  # 1102: ib_async re-requests the account summary by itself
        gw.farm_outage()
        gw.farm_restored()
        gw.hmds_outage()
        gw.hmds_restored()
        await until(lambda: len(seen) >= 7)
        assert seen == [(-1, c) for c in (1100, 1101, 1102, 2103, 2104, 2105, 2106)]
        await gw.wait_for(lambda: any(s.summary_subs for s in gw.sessions))
        await until(lambda: any(v.tag == "NetLiquidation" for v in ib.wrapper.acctSummary.values()))


async def test_duplicate_client_id_gets_326_and_is_closed() -> None:
    async with session(client_id=5) as (gw, ib, errors):
        errors.allow("Error 326")
        errors.allow("already in use")
        errors.allow("API connection failed")
        second = IB()
        codes: list[int] = []
        second.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        attempt = asyncio.ensure_future(second.connectAsync("127.0.0.1", gw.port, clientId=5, timeout=TIMEOUT))
        try:
            await until(lambda: 326 in codes)
            await until(lambda: not second.client.isConnected())
        finally:
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            second.disconnect()
        assert gw.client_ids() == [5] and ib.isConnected()
        assert len(await asyncio.wait_for(ib.reqPositionsAsync(), TIMEOUT)) == 0  # first client unaffected


async def test_stall_holds_messages_until_resumed() -> None:
    async with session() as (gw, ib, _errors):
        gw.stall()
        request = asyncio.ensure_future(ib.reqCurrentTimeAsync())
        await gw.wait_for(lambda: sum(s.messages_received for s in gw.sessions) > 0 and not request.done())
        await asyncio.sleep(0.05)
        assert not request.done()
        gw.resume()
        assert await asyncio.wait_for(request, TIMEOUT)


async def test_history_pacing_error_162() -> None:
    async with session() as (_gw, ib, errors):
        errors.allow("Error 162")
        contract = stock("CCC")
        first = await asyncio.wait_for(ib.reqHistoricalDataAsync(contract, "", "5 D", "1 day", "TRADES", True), TIMEOUT)
        assert first
        codes: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        again = await asyncio.wait_for(ib.reqHistoricalDataAsync(contract, "", "5 D", "1 day", "TRADES", True), TIMEOUT)
        assert len(again) == 0
        assert codes == [162], codes  # identical request within 15 s
        for days in range(6, 10):  # four more distinct requests: five within 2 s in all
            assert await asyncio.wait_for(
                ib.reqHistoricalDataAsync(contract, "", f"{days} D", "1 day", "TRADES", True), TIMEOUT
            )
        sixth = await asyncio.wait_for(
            ib.reqHistoricalDataAsync(contract, "", "11 D", "1 day", "TRADES", True), TIMEOUT
        )
        assert len(sixth) == 0 and codes == [162, 162]


async def test_gateway_outlives_clients_and_log_is_clean() -> None:
    with IbErrorCapture.installed() as errors:
        gw = await make_gateway().start()
        try:
            for client_id in (1, 2):
                ib = await connect(gw, client_id)
                ib.disconnect()
            await gw.wait_for(lambda: not gw.sessions)
        finally:
            await gw.close()
        assert not errors.unexpected() and not gw.errors


async def test_runner_serves_in_real_time_until_stopped() -> None:
    """The CLI path: real-time clock (speed > 0), announced port, clean stop."""
    import io

    from ibfake.runner import serve

    stop = asyncio.Event()
    ready: asyncio.Future[FakeGateway] = asyncio.get_running_loop().create_future()
    text = io.StringIO()
    task = asyncio.ensure_future(
        serve("127.0.0.1", 0, seed=3, symbols=["XYZ"], speed=60.0, stop=stop, on_ready=ready.set_result, out=text)
    )
    try:
        gw = await asyncio.wait_for(ready, TIMEOUT)
        assert f"listening on 127.0.0.1:{gw.port}" in text.getvalue()
        with IbErrorCapture.installed() as errors:
            ib = await connect(gw, 9)
            try:
                ticker = ib.reqMktData(await qualified(ib, "XYZ"))
                await until(lambda: ticker.bid > 0)  # the background clock alone produces quotes
                first = gw.now
                await until(lambda: gw.now > first)
            finally:
                ib.disconnect()
            assert not errors.unexpected()
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def test_connecting_client_hears_each_farms_state_as_ib_greets() -> None:
    """IB's greeting after startApi: 2104 (market data farm OK), 2106 (HMDS OK), 2158 (sec-def OK) with reqId -1,
    logged by ib_async as warnings (codes 2100-2199), not errors; a farm that is down is greeted as down."""
    with IbErrorCapture.installed() as errors:
        gw = await make_gateway().start()
        try:
            for down, expected in ((False, [2104, 2106, 2158]), (True, [2103, 2105, 2158])):
                if down:
                    gw.farm_outage()
                    gw.hmds_outage()
                ib = IB()
                seen: list[tuple[int, int]] = []
                ib.errorEvent += lambda req_id, code, msg, contract, seen=seen: seen.append((req_id, code))
                await asyncio.wait_for(ib.connectAsync("127.0.0.1", gw.port, clientId=7 + down, timeout=TIMEOUT),
                                       TIMEOUT)
                try:
                    await until(lambda seen=seen: len(seen) >= 3)
                    assert seen[:3] == [(-1, code) for code in expected]
                finally:
                    ib.disconnect()
        finally:
            await gw.close()
        assert not gw.errors and not errors.unexpected(), errors.unexpected()
