"""120 entries at start-up through ``ib_async`` to the fake gateway: the budget keeps IB's rule as the gateway counts
it, and an entry IB still refuses with error 100 is sent again, not lost."""

from __future__ import annotations

from ib_engine_support import ACCOUNT, engine_on_gateway, until

from ibfake.clock import PacingLimits
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Side
from tickguard.core.trades import TradeRequest

N = 120


def entry(i: int) -> TradeRequest:
    return TradeRequest(symbol=("AAA", "BBB")[i % 2], side=Side.LONG, qty=1 + i % 3, account=ACCOUNT,
                        rules=[StopLoss(distance=5.0, unit="price")])


async def test_120_entries_at_start_up_stay_within_ibs_rule_at_the_gateway():
    # The gateway here shares the engine's event loop, so it reads (and stamps) messages later than a gateway of
    # its own would: the budget's window margin covers that lag (0.3 s, as in the storm test; 0.1 s by default).
    async with engine_on_gateway(["AAA", "BBB"], client_id=42, settings={"watchdog": {"enabled": False},
                                                                         "throttle": {"window_margin_s": 0.3}}) as run:
        trades = [run.engine.submit(entry(i)) for i in range(N)]
        await until(lambda: all(t.state.value != "pending_entry" for t in trades), run.gw, timeout=60)
        assert {t.state.value for t in trades} == {"open"}
        report = run.gw.pacing_report()[42]  # IB's 50 a second, counted by the gateway as it reads
        assert report.refused == 0 and report.violations == 0
        assert report.max_in_window <= run.engine.settings.throttle.rate, report


async def test_an_entry_refused_with_error_100_is_sent_again_not_lost():
    """A gateway stricter than the budget (20 a second against 45): it refuses some entries with 100; each is sent
    again with the same key until it is taken, and every trade opens once."""
    async with engine_on_gateway(["AAA", "BBB"], client_id=43, allowed=("Error 100", "Canceled order"),
                                 gateway={"pacing": PacingLimits(max_msgs_per_s=20, violations_to_drop=1000)},
                                 settings={"watchdog": {"enabled": False},
                                           "engine": {"order_retry_backoff_ms": 200, "max_order_attempts": 50}}) as run:
        trades = [run.engine.submit(entry(i)) for i in range(N)]
        await until(lambda: all(t.state.value != "pending_entry" for t in trades), run.gw, timeout=90)
        assert {t.state.value for t in trades} == {"open"}
        assert run.gw.pacing_report()[43].refused > 0  # IB did refuse some
        filled = [o for o in run.gw.venue.exchange.orders.values() if o.status == "filled"]
        keys = [o.order.ref for o in filled]
        assert len(keys) == len(set(keys)) == N  # each entry executed once, under its own key
