"""An exit storm through ``ib_async`` to the fake gateway: one message budget, exits first, no pacing violation.

1,000 long trades on one symbol, each with its own stop; one quote far below every stop fires all 1,000 exits in
one engine step, and while they wait for the budget, 100 entries and 100 what-if requests are queued behind them.
The gateway's own count (its pacing report, wall time, every message the client sent) is the judge: no refusal,
no violation, never more than the budget's rate in any 1-second window.  The gateway and the budget are scaled
up ten times (500 and 450 messages a second) so the storm takes about two seconds; the rules are the same.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from ib_engine_support import ACCOUNT, engine_on_gateway, until

from ibfake.clock import PacingLimits
from tickguard.adapters.broker import BrokerError, BrokerOrder
from tickguard.core.exit_rules import StopLoss
from tickguard.core.message_budget import order_lane
from tickguard.core.model import Action, OrderType, Side
from tickguard.core.trades import TradeRequest

RATE = 450  # the budget; the gateway refuses beyond 500 a second
N_EXITS, N_ENTRIES, N_WHAT_IFS = 1000, 100, 100


def long_trade(i: int) -> TradeRequest:
    # stops from 5.00 to 5.99 below the entry (the market does not reach them by itself in the test's seconds): the
    # quote that fires them all goes through each by a different depth
    distance = Decimal("5.00") + Decimal(i % 100) / 100
    return TradeRequest(symbol="AAA", side=Side.LONG, qty=1 + i % 7, account=ACCOUNT,
                        rules=[StopLoss(distance=distance, unit="price")])


async def test_an_exit_storm_goes_out_most_at_risk_first_with_no_pacing_violation():
    # the shadow checker's own what-ifs would be sent before the storm (rightly) and mix with the ones this test
    # queues behind the exits: it is off here, the test's what-ifs stand for it
    settings = {"throttle": {"rate": RATE, "burst": RATE // 10, "entry_queue_max": 600, "window_margin_s": 0.3},
                "watchdog": {"enabled": False}, "shadow": {"enabled": False}}
    async with engine_on_gateway(["AAA"], client_id=41, gateway={"pacing": PacingLimits(max_msgs_per_s=500)},
                                 settings=settings) as run:
        gw, engine, broker = run.gw, run.engine, run.broker
        sent: list[tuple[str, str]] = []  # ("order", key) / ("what-if", ref), in the order they went to the wire
        place, what_if = broker.place_order, broker.ib.whatIfOrderAsync

        def place_logged(order: BrokerOrder) -> int:
            sent.append(("order", order.ref))
            return place(order)

        def what_if_logged(contract, order):
            sent.append(("what-if", order.orderRef or "what-if"))
            return what_if(contract, order)

        broker.place_order = place_logged  # type: ignore[method-assign]
        broker.ib.whatIfOrderAsync = what_if_logged  # type: ignore[method-assign]

        trades = []
        for start in range(0, N_EXITS, 500):  # the entry lane holds 600: open them in two waves
            trades += [engine.submit(long_trade(i)) for i in range(start, start + 500)]
            await until(lambda wave=trades: all(t.state.value != "pending_entry" for t in wave), gw, timeout=60)
            assert {t.state.value for t in trades} == {"open"}, {t.reason for t in trades if t.reason}
        quote = engine.ticks.quote("AAA")
        assert quote is not None
        low = float(engine.grid("AAA").price(quote.bid)) - 10  # far below every stop
        sent.clear()

        gw.burst("AAA", [(low, low + 0.01)])  # one quote: all 1,000 stops cross in one engine step
        await until(lambda: engine.budget.throttle.depth()[0] > 0, gw, step=0.0, timeout=10)  # exits wait
        late_entries = [engine.submit(long_trade(i)) for i in range(N_ENTRIES)]
        what_ifs = [asyncio.create_task(broker.what_if(BrokerOrder(f"wi-{i}", ACCOUNT, "AAA", Action.BUY,
                                                                   Decimal(1), OrderType.MARKET)))
                    for i in range(N_WHAT_IFS)]
        await until(lambda: all(t.state.value == "closed" for t in trades), gw, timeout=60)
        answers = await asyncio.wait_for(asyncio.gather(*what_ifs, return_exceptions=True), 30)
        await until(lambda: all(t.state.value != "pending_entry" for t in late_entries), gw, timeout=30)

        # none lost, none sent twice: every trade exited once, with one exit order
        exit_keys = [key for kind, key in sent if kind == "order" and not key.endswith(":entry")]
        assert len(exit_keys) == len(set(exit_keys)) == N_EXITS
        assert all(t.exited == t.entry_filled for t in trades)
        # most at risk first: the exits went out in the budget's order (the deepest through its stop first)
        records = {r.intent.key: r for r in engine.executor.orders.values()}
        risks = [order_lane(records[key].intent) for key in exit_keys]
        assert risks == sorted(risks)
        # everything queued behind the exits went after the last of them: entries, then what-ifs
        last_exit = max(i for i, (kind, key) in enumerate(sent) if kind == "order" and key in set(exit_keys))
        later = [i for i, (kind, key) in enumerate(sent) if kind == "what-if" or key.endswith(":entry")]
        assert later and min(later) > last_exit
        entry_at = [i for i, (kind, key) in enumerate(sent) if key.endswith(":entry")]
        what_if_at = [i for i, (kind, _) in enumerate(sent) if kind == "what-if"]
        assert max(entry_at) < min(what_if_at)
        # entries waited (and went) or were refused with a reason; what-ifs were answered or refused by name
        assert all(t.state.value in ("open", "closed") or "queue" in t.reason for t in late_entries)
        assert all(not isinstance(a, BaseException) or isinstance(a, BrokerError) for a in answers)
        # the gateway's count: no refusal, no violation, never more than the budget's rate in any 1 s window
        report = gw.pacing_report()[41]
        assert report.refused == 0 and report.violations == 0 and report.max_in_window <= RATE, report
        # and nothing bypassed the budget: every message on the wire was released or charged by it
        assert broker.wire_messages == engine.budget.spent == report.received
