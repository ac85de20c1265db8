"""The simulated exchange through the venue: fills, slippage, partials, rejections, what-if and pacing."""

import pytest

from tickguard.adapters.broker import BrokerOrder, FillEvent, NoticeEvent, OrderStatusEvent
from tickguard.adapters.sim.exchange import ExchangeParams
from tickguard.adapters.sim.market import NS, MarketParams
from tickguard.adapters.sim.venue import SimVenue
from tickguard.core.model import Action, OrderType

START = 1_763_908_200 * NS


def venue(**ex):
    params = ExchangeParams(**{"partial_fill_prob": 0.0, "latency_jitter_ms": 0.0, **ex})
    v = SimVenue(11, START, 2, MarketParams(bad_tick_prob=0.0, locked_prob=0.0), params)
    v.advance_to(START + NS)  # quotes for every symbol
    return v


def order(v, action=Action.BUY, qty=100.0, kind=OrderType.MARKET, limit=None, ref="r1", symbol=None):
    return BrokerOrder(ref, "DU1", symbol or sorted(v.specs)[0], action, qty, kind, limit)


def until_final(v, oid, limit_s=60):
    events = []
    end = v.now_ns + limit_s * NS
    while v.now_ns < end:
        for e in v.step():
            if getattr(e, "order_id", None) == oid:
                events.append(e)
                if isinstance(e, OrderStatusEvent) and e.status in ("filled", "cancelled", "rejected"):
                    return events
    raise AssertionError(f"order {oid} not final after {limit_s}s: {events}")


def test_market_buy_fills_at_ask_plus_slippage_after_latency():
    v = venue(latency_ms=5.0, slippage_ticks=2)
    sym = sorted(v.specs)[0]
    sent = v.now_ns
    oid = v.place(order(v))
    events = until_final(v, oid)
    fill = next(e for e in events if isinstance(e, FillEvent))
    assert fill.ts_ns >= sent + 5_000_000
    _, ask, _ = v.exchange.quotes[sym]
    assert 0 <= round((float(fill.price) - v.last_ticks[sym].ask) / 0.01) <= 2 or fill.price >= ask - 1
    assert fill.commission == 1  # 100 x 0.005 = 0.5, minimum 1.0
    assert v.positions("DU1") == {sym: 100.0}
    assert [e.status for e in events if isinstance(e, OrderStatusEvent)] == ["submitted", "filled"]


def test_limit_rests_until_the_market_reaches_it_and_can_be_cancelled():
    v = venue()
    sym = sorted(v.specs)[0]
    bid = v.last_ticks[sym].bid
    oid = v.place(order(v, kind=OrderType.LIMIT, limit=round(bid * 0.5, 2)))
    v.advance_to(v.now_ns + 5 * NS)
    assert v.exchange.orders[oid].status == "working"
    v.cancel(oid)
    events = until_final(v, oid)
    assert events[-1].status == "cancelled" and v.positions("DU1") == {}


def test_partial_fills_come_in_pieces_that_sum_to_the_order():
    v = venue()
    v.exchange.partial_next = True
    oid = v.place(order(v, qty=300))
    events = until_final(v, oid)
    fills = [e for e in events if isinstance(e, FillEvent)]
    assert len(fills) == 2 and sum(f.qty for f in fills) == 300


def test_rejections_random_injected_and_buying_power():
    v = venue(reject_prob=1.0)
    [ev] = [e for e in until_final(v, v.place(order(v))) if isinstance(e, OrderStatusEvent)]
    assert ev.status == "rejected" and ev.code == 201 and "simulated" in ev.reason
    v = venue(initial_cash=10_000.0, leverage=1.0)
    ev = until_final(v, v.place(order(v, qty=10_000)))[-1]
    assert ev.status == "rejected" and "insufficient buying power" in ev.reason
    v.exchange.reject_next = "test says no"
    ev = until_final(v, v.place(order(v, qty=1)))[-1]
    assert ev.reason == "Order rejected - reason: test says no"


def test_unknown_symbol_and_bad_quantity_rejected_with_codes():
    v = venue()
    ev = until_final(v, v.place(order(v, symbol="NOPE")))[-1]
    assert (ev.status, ev.code) == ("rejected", 200)
    ev = until_final(v, v.place(order(v, qty=-5)))[-1]
    assert ev.status == "rejected" and "invalid quantity -5" in ev.reason


def test_closing_orders_pass_without_buying_power():
    v = venue(initial_cash=20_000.0, leverage=1.0)
    sym = sorted(v.specs)[0]
    qty = int(15_000 / v.last_ticks[sym].ask)
    assert until_final(v, v.place(order(v, qty=qty)))[-1].status == "filled"
    v.exchange.accounts["DU1"].cash = -1e9  # wiped out: opening orders now refused ...
    assert until_final(v, v.place(order(v, qty=1)))[-1].status == "rejected"
    done = until_final(v, v.place(order(v, action=Action.SELL, qty=qty)))  # ... but an exit still goes
    assert done[-1].status == "filled" and v.positions("DU1") == {}


def test_what_if_reports_margin_and_commission():
    v = venue(margin_rate=0.25)
    sym = sorted(v.specs)[0]
    ask = v.last_ticks[sym].ask
    w = v.what_if(order(v, qty=100))
    assert w.accepted and w.init_margin_change == pytest.approx(100 * ask * 0.25) and w.commission == 1.0
    w = v.what_if(order(v, qty=1e9))
    assert not w.accepted and w.warning == "insufficient buying power"


def test_pacing_over_50_messages_in_a_second_is_error_100():
    v = venue(max_msgs_per_s=50)
    ids = [v.place(order(v, qty=1, ref=f"r{i}")) for i in range(51)]
    v.advance_to(v.now_ns + NS // 2)
    statuses = {oid: v.exchange.orders[oid].status for oid in ids}
    assert list(statuses.values()).count("rejected") == 1 and statuses[ids[-1]] == "rejected"
    assert v.exchange.pacing_violations == 1
    v.advance_to(v.now_ns + NS)  # a second later the budget is back
    oid = v.place(order(v, qty=1, ref="later"))
    assert until_final(v, oid)[-1].status == "filled"


def test_cancel_of_unknown_order_is_a_notice():
    v = venue()
    v.cancel(12345)
    events = v.advance_to(v.now_ns + NS)
    assert any(isinstance(e, NoticeEvent) and e.code == 10148 for e in events)


def test_venue_is_deterministic_per_seed():
    def run(seed):
        v = SimVenue(seed, START, 3)
        out = v.advance_to(START + 120 * NS)
        return [(e.symbol, e.ts_ns, e.bid, e.ask) for e in out]
    assert run(5) == run(5) and run(5) != run(6)
