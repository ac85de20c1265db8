"""Daily bars from IB (adapters/ib/contracts.py): "N D" of daily bars is a calendar span at IB, so the adapter
asks for the span that holds the sessions it needs and keeps the last of them."""

from __future__ import annotations

import asyncio

import pytest
from gateway_support import make_gateway
from test_ib_client import ACCOUNT, broker_on_gateway

from tickguard.adapters.ib.contracts import daily_duration
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.config import load


@pytest.mark.parametrize(("sessions", "duration"), [(2, "6 D"), (14, "23 D"), (20, "32 D"), (60, "90 D"),
                                                     (250, "365 D"), (252, "2 Y")])
def test_the_calendar_span_holds_the_sessions_with_weekends_and_holidays(sessions, duration):
    assert daily_duration(sessions) == duration  # 7/5 of the sessions (weekends), + 3, + 1 per 20 (holidays)


@pytest.mark.parametrize("sessions", [5, 14, 60])
async def test_the_adapter_gets_exactly_the_sessions_it_asked_for(sessions):
    async with broker_on_gateway() as (_gw, broker, _):
        bars = await broker.daily_bars("AAA", sessions)
        assert len(bars) == sessions  # the gateway reads "N D" as calendar days, as IB does
        assert len({b.ts_ns for b in bars}) == sessions and [b.ts_ns for b in bars] == sorted(b.ts_ns for b in bars)


@pytest.mark.parametrize("wait_s", [0.0, 2.0])
async def test_a_restart_within_ibs_history_pacing_window_waits_it_out(wait_s):
    """IB refuses (162) a historical request identical to one of the last 15 s - what an engine restarted at once
    asks for.  The gateway's window is 1 s here: a second client asking the same bars at once gets them, after
    waiting the refusal out; without the wait (``history_pacing_wait_s = 0``) it would start without them."""
    from fg_support import IbErrorCapture

    from ibfake.server import HistoryPacingLimits
    from tickguard.adapters.broker import BrokerError

    with IbErrorCapture.installed() as errors:
        errors.allow("Error 162")
        gw = await make_gateway(history_pacing=HistoryPacingLimits(identical_s=1.0)).start()
        brokers = [IBBroker(load(None, {"ib": {"port": gw.port, "client_id": 30 + i, "account": ACCOUNT,
                                               "history_pacing_wait_s": wait_s}}).ib) for i in range(2)]
        try:
            for broker in brokers:
                await asyncio.wait_for(broker.connect(), 15)
            assert len(await brokers[0].daily_bars("AAA", 14)) == 14
            if wait_s:
                assert len(await asyncio.wait_for(brokers[1].daily_bars("AAA", 14), 10)) == 14
                assert any("Error 162" in r.getMessage() for r in errors.records)  # it was paced, then waited
            else:
                with pytest.raises(BrokerError, match="IB returned no daily bars"):
                    await brokers[1].daily_bars("AAA", 14)
        finally:
            for broker in brokers:
                await broker.close()
            await gw.close()
        assert errors.unexpected() == []
