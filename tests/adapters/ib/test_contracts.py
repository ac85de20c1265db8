"""Daily bars from IB (adapters/ib/contracts.py): "N D" of daily bars is a calendar span at IB, so the adapter
asks for the span that holds the sessions it needs and keeps the last of them."""

from __future__ import annotations

import pytest
from test_ib_client import broker_on_gateway

from tickguard.adapters.ib.contracts import daily_duration


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
