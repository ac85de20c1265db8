"""Lifecycle and exit evaluation of the trade manager, with an injected clock and hand-fed ticks."""

import datetime as dt
import math
from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from tickguard.core.exit_rules import BreakEven, StopLoss, TakeProfit, TimeStop, TrailingStop
from tickguard.core.model import Action, OrderType, PriorityClass, Side, TradeState
from tickguard.core.order_state import OrderStatus
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_manager import TradeManager, TradeRejected
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot

# ATR of AAA is 2.0, ADR 3.0 (conftest.Market)


def make(clock, market, **kw):
    return TradeManager(clock, market.vol.get, market.quotes.get, **kw)


def feed(tm, market, *quotes, symbol="AAA"):
    """Evaluate each (bid, ask) as a tick; returns the intents sent."""
    sent = []
    for q in quotes:
        bid, ask = q if isinstance(q, tuple) else (q, q + 0.02)
        tm.evaluate(market.tick(symbol, bid, ask))
        sent += tm.outbox
        tm.outbox = []
    return sent


def fill_entry(tm, clock, trade, qty=None, price=100.0):
    intent = next(i for i in [*tm.outbox] if i.key == trade.entry_key) if tm.outbox else None
    tm.outbox = []
    intent = intent or _entry_intent(trade)
    tm.on_fill(intent, trade.request.qty if qty is None else qty, price, clock(), 1.0)
    return intent


def _entry_intent(trade):
    from tickguard.core.model import OrderIntent
    r = trade.request
    return OrderIntent(trade.entry_key, trade.id, "entry", r.user, r.account, r.symbol, r.side.entry_action, r.qty,
                       r.entry_type, r.limit_price, PriorityClass.ENTRY, 0)


def req(side=Side.LONG, qty=100.0, rules=None, **kw):
    return TradeRequest(symbol="AAA", side=side, qty=qty, rules=rules or [StopLoss(distance=1.0)], **kw)


@pytest.fixture
def tm(clock, market):
    market.tick("AAA", 100.0, 100.02)
    return make(clock, market)


# ------------------------------------------------------------------------------------------ validation


def test_invalid_requests_refused_with_reason(tm):
    with pytest.raises(ValidationError, match="greater than 0"):
        req(qty=0)
    with pytest.raises(ValidationError, match="greater than 0"):
        req(qty=-5)
    with pytest.raises(ValidationError, match="fractions must sum to 1, they sum to 0.9"):
        req(rules=[StopLoss(distance=1), TakeProfit(fraction=0.5, distance=1), TakeProfit(fraction=0.4, distance=2)])
    with pytest.raises(ValidationError, match="needs a stop_loss or trailing_stop"):
        req(rules=[BreakEven(after=1), TakeProfit(distance=1)])
    with pytest.raises(ValidationError, match="at most one stop_loss"):
        req(rules=[StopLoss(distance=1), StopLoss(distance=2)])
    with pytest.raises(ValidationError, match="limit entry needs limit_price"):
        req(entry_type=OrderType.LIMIT)
    with pytest.raises(TradeRejected, match="unknown symbol 'ZZZ'"):
        tm.submit(TradeRequest(symbol="ZZZ", side=Side.LONG, qty=1, rules=[StopLoss(distance=1)]))
    with pytest.raises(TradeRejected, match="stop_loss price 101.0 is on the wrong side"):
        tm.submit(req(rules=[StopLoss(price=101.0)]))
    with pytest.raises(TradeRejected, match="stop_loss price 99.0 is on the wrong side"):
        tm.submit(req(side=Side.SHORT, rules=[StopLoss(price=99.0)]))
    with pytest.raises(TradeRejected, match="take_profit price 99.0 is on the wrong side"):
        tm.submit(req(rules=[StopLoss(distance=1), TakeProfit(price=99.0)]))
    with pytest.raises(TradeRejected, match="not a whole number of lots"):
        tm.submit(req(qty=1.5))
    assert tm.trades == {} and tm.outbox == []  # nothing half-accepted


def test_refusal_does_not_touch_accepted_trades(tm):
    ok = tm.submit(req())
    with pytest.raises(TradeRejected):
        tm.submit(req(rules=[StopLoss(price=150.0)]))
    assert list(tm.trades) == [ok.id] and ok.state is TradeState.PENDING_ENTRY


# ------------------------------------------------------------------------------------------ lifecycle


def test_entry_intent_then_open_then_stop_closes(tm, clock, market):
    trade = tm.submit(req())
    [entry] = tm.outbox
    assert (entry.action, entry.qty, entry.priority, entry.key) == (Action.BUY, 100, PriorityClass.ENTRY,
                                                                       f"tg:{trade.id}:entry")
    fill_entry(tm, clock, trade, price=100.0)
    assert trade.state is TradeState.OPEN and tm.stop_price(trade) == D("98.0")
    assert feed(tm, market, 98.01) == []
    [exit_] = feed(tm, market, 98.0)  # inclusive: bid == stop fires
    assert (exit_.action, exit_.qty, exit_.leg, exit_.priority) == (Action.SELL, 100, "stop",
                                                                      PriorityClass.EXIT_CRITICAL)
    assert exit_.key == f"tg:{trade.id}:stop:1"
    assert exit_.trigger.rule == "stop_loss" and exit_.trigger.price == 98.0 and exit_.trigger.level == 98.0
    assert trade.state is TradeState.EXITING
    assert feed(tm, market, 97.0, 96.0) == []  # never a second exit for the same leg
    tm.on_fill(exit_, 100, 97.99, clock(), 1.0)
    tm.on_intent_closed(exit_, OrderStatus.FILLED, 0, "")
    assert trade.state is TradeState.CLOSED
    assert trade.realized == pytest.approx(-201.0)



def test_live_trades_and_watched_symbols_follow_every_state_change_without_a_walk(tm, clock, market):
    """The watchdog's and the shadow checker's questions (``symbols_in``, ``trades_in``, ``live_trades``) are
    answered by the live index (``core.live_trades``): a closed trade leaves it, a restored closed one never joins,
    and changes made outside the manager (a restore's snapshot) are seen too."""
    market.vol["BBB"] = VolSnapshot("BBB", 1.0, 1.5, clock())
    market.tick("BBB", 50.0, 50.02)
    a, b = tm.submit(req()), tm.submit(req())
    c = tm.submit(TradeRequest(symbol="BBB", side=Side.LONG, qty=1, rules=[StopLoss(distance=1.0)]))
    watched = {TradeState.OPEN, TradeState.EXITING}
    assert tm.symbols_in(watched) == [] and [t.id for t in tm.live_trades()] == [a.id, b.id, c.id]
    fill_entry(tm, clock, a)
    assert tm.symbols_in(watched) == ["AAA"] and tm.trades_in("AAA", watched) == [a]
    [exit_] = feed(tm, market, 98.0)
    assert tm.trades_in("AAA", {TradeState.EXITING}) == [a]
    tm.on_fill(exit_, 100, 98.0, clock(), 1.0)
    tm.on_intent_closed(exit_, OrderStatus.FILLED, 0, "")
    assert a.state is TradeState.CLOSED
    assert tm.symbols_in(watched) == [] and [t.id for t in tm.live_trades()] == [b.id, c.id]
    assert tm.symbols_in({TradeState.PENDING_ENTRY}) == ["AAA", "BBB"]
    again = make(clock, market)
    closed = again.restore(a.id, a.request, tm.snapshot(a), a.created_ns)
    opened = again.restore(b.id, b.request, tm.snapshot(b), b.created_ns)
    assert again.live_trades() == [opened] and closed.state is TradeState.CLOSED
    assert again.symbols_in({TradeState.PENDING_ENTRY}) == ["AAA"]


def test_short_stop_watches_the_ask(tm, clock, market):
    trade = tm.submit(req(side=Side.SHORT, rules=[StopLoss(distance=1.0), TakeProfit(distance=2.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    assert tm.stop_price(trade) == D("102.0")
    assert feed(tm, market, (101.99, 101.99)) == []  # locked quote below the stop
    [ex] = feed(tm, market, (101.9, 102.0))
    assert ex.action is Action.BUY and ex.leg == "stop" and ex.trigger.price == 102.0


def test_short_take_profit_on_ask(tm, clock, market):
    trade = tm.submit(req(side=Side.SHORT, rules=[StopLoss(distance=1.0), TakeProfit(distance=2.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    assert feed(tm, market, (95.9, 96.01)) == []
    [ex] = feed(tm, market, (95.9, 96.0))
    assert ex.leg == "tp1" and ex.qty == 100 and ex.priority is PriorityClass.EXIT


def test_take_profit_legs_by_fraction_then_stop_takes_rest(tm, clock, market):
    trade = tm.submit(req(qty=101, rules=[StopLoss(distance=1.0), TakeProfit(fraction=0.5, distance=2.0),
                                          TakeProfit(fraction=0.5, distance=4.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    [tp1] = feed(tm, market, 104.0)
    assert (tp1.leg, tp1.qty) == ("tp1", 50)  # floor to lots; the last leg takes the odd share
    tm.on_fill(tp1, 50, 104.0, clock(), 1.0)
    tm.on_intent_closed(tp1, OrderStatus.FILLED, 0, "")
    assert trade.state is TradeState.OPEN and trade.open_qty == 51
    [stop] = feed(tm, market, 97.5)
    assert (stop.leg, stop.qty) == ("stop", 51)


def test_gap_through_both_targets_fires_both_legs(tm, clock, market):
    trade = tm.submit(req(rules=[StopLoss(distance=1.0), TakeProfit(fraction=0.5, distance=1.0),
                                 TakeProfit(fraction=0.5, distance=2.0)]))
    fill_entry(tm, clock, trade)
    sent = feed(tm, market, 110.0)
    assert [(i.leg, i.qty) for i in sent] == [("tp1", 50), ("tp2", 50)]


def test_trailing_stop_only_tightens(tm, clock, market):
    trade = tm.submit(req(rules=[TrailingStop(distance=1.0)]))  # 1 ATR = 2.0
    fill_entry(tm, clock, trade, price=100.0)
    assert tm.stop_price(trade) == D("98.0")
    feed(tm, market, 103.0)
    assert tm.stop_price(trade) == D("101.0")
    feed(tm, market, 102.0, 101.5)
    assert tm.stop_price(trade) == D("101.0")  # falling price never loosens it
    [ex] = feed(tm, market, 101.0)
    assert ex.trigger.rule == "trailing_stop" and ex.trigger.level == D("101.0")


def test_short_trailing_stop(tm, clock, market):
    trade = tm.submit(req(side=Side.SHORT, rules=[TrailingStop(distance=1.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    feed(tm, market, (95.0, 95.02))
    assert tm.stop_price(trade) == D("97.02")
    feed(tm, market, (96.0, 96.02))
    assert tm.stop_price(trade) == D("97.02")
    [ex] = feed(tm, market, (97.0, 97.02))
    assert ex.action is Action.BUY and ex.leg == "stop"


def test_trailing_activation_threshold(tm, clock, market):
    trade = tm.submit(req(rules=[StopLoss(distance=2.0), TrailingStop(distance=0.5, activate_after=1.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    assert tm.stop_price(trade) == D("96.0")
    feed(tm, market, 101.9)  # 0.95 ATR: not yet active
    assert trade.trail_x is None and tm.stop_price(trade) == D("96.0")
    feed(tm, market, 102.0)  # 1 ATR: active, trail at 102 - 1
    assert tm.stop_price(trade) == D("101.0")


def test_break_even_moves_stop_to_entry_plus_offset(tm, clock, market):
    trade = tm.submit(req(rules=[StopLoss(distance=1.0), BreakEven(after=1.0, offset=0.05),
                                 TakeProfit(distance=5.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    feed(tm, market, 101.99)
    assert tm.stop_price(trade) == D("98.0")
    feed(tm, market, 102.0)
    assert tm.stop_price(trade) == D("100.05")
    [ex] = feed(tm, market, 100.05)
    assert ex.trigger.rule == "break_even"


def test_the_stop_level_alone_is_the_effective_stops_level_at_every_tick(tm, clock, market):
    """``StopTracker.level_x`` (the shadow checker's cheap read) never disagrees with ``effective``: long and
    short, stop-loss with trailing and break-even components, trailing alone (a trail group), no stop at all."""
    trades = [tm.submit(req(side=side, rules=rules)) for side in (Side.LONG, Side.SHORT) for rules in (
        [StopLoss(distance=2.0), TrailingStop(distance=0.5, activate_after=1.0)],
        [StopLoss(distance=1.0), BreakEven(after=1.0, offset=0.05)],
        [TrailingStop(distance=1.0)],
        [TakeProfit(distance=9.0)])]
    for trade in trades:
        fill_entry(tm, clock, trade, price=100.0)
    levels = set()
    for bid in (100.5, 101.0, 102.2, 103.1, 102.0, 100.4, 99.0, 97.6, 98.8, 97.2):
        feed(tm, market, (bid, bid + 0.02))
        for trade in trades:
            effective = tm.stops.effective(trade)
            assert tm.stops.level_x(trade) == (None if effective is None else effective.level_x), trade.id
            levels.add((trade.id, tm.stops.level_x(trade)))
    assert len(levels) > len(trades) + 4  # the stops did move


def test_short_break_even(tm, clock, market):
    trade = tm.submit(req(side=Side.SHORT, rules=[StopLoss(distance=1.0), BreakEven(after=1.0, offset=0.05)]))
    fill_entry(tm, clock, trade, price=100.0)
    feed(tm, market, (97.9, 98.0))
    assert tm.stop_price(trade) == D("99.95")


def test_time_stop_after_duration(tm, clock, market):
    trade = tm.submit(req(rules=[StopLoss(distance=3.0), TimeStop(after_seconds=60)]))
    fill_entry(tm, clock, trade)
    deadline = tm.next_deadline()
    assert deadline == trade.entry_ts_ns + 60 * 10**9
    tm.on_time(deadline - 1)
    assert tm.outbox == []
    tm.on_time(deadline)
    [ex] = tm.outbox
    assert ex.leg == "time" and ex.qty == 100 and ex.trigger.rule == "time_stop"


def test_time_stop_at_clock_time(clock, market):
    ny = dt.timezone(dt.timedelta(hours=-5))
    clock.now = int(dt.datetime(2026, 11, 23, 15, 0, tzinfo=ny).timestamp() * 1e9)
    market.tick("AAA", 100.0)
    tm = make(clock, market)
    trade = tm.submit(req(rules=[StopLoss(distance=3.0), TimeStop(at=dt.time(15, 55))]))
    fill_entry(tm, clock, trade)
    assert trade.time_deadline_ns == int(dt.datetime(2026, 11, 23, 15, 55, tzinfo=ny).timestamp() * 1e9)


def test_partial_entry_fills_size_the_exits(tm, clock, market):
    trade = tm.submit(req(qty=100, rules=[StopLoss(distance=1.0), TakeProfit(fraction=0.5, distance=1.0),
                                          TakeProfit(fraction=0.5, distance=3.0)]))
    entry = fill_entry(tm, clock, trade, qty=40, price=100.0)
    assert trade.state is TradeState.OPEN and trade.entry_filled == 40
    [tp1] = feed(tm, market, 102.0)
    assert tp1.qty == 20  # half of what is filled
    tm.on_fill(tp1, 20, 102.0, clock(), 1.0)
    tm.on_intent_closed(tp1, OrderStatus.FILLED, 0, "")
    tm.on_fill(entry, 60, 100.0, clock(), 1.0)  # rest of the entry fills
    [tp1b] = feed(tm, market, 102.1)
    assert (tp1b.leg, tp1b.qty, tp1b.key) == ("tp1", 30, f"tg:{trade.id}:tp1:2")
    [stop] = feed(tm, market, 97.0)
    assert stop.qty == 50  # 100 filled - 20 exited - 30 still in flight with tp1b


def test_partial_exit_fill_then_cancel_is_retried(tm, clock, market):
    trade = tm.submit(req(qty=100, rules=[StopLoss(distance=1.0)]))
    fill_entry(tm, clock, trade)
    [stop] = feed(tm, market, 97.0)
    tm.on_fill(stop, 30, 97.0, clock(), 1.0)
    tm.on_intent_closed(stop, OrderStatus.CANCELLED, 70, "exchange cancel")
    assert trade.state is TradeState.EXITING and trade.open_qty == 70
    clock.advance(1.0)
    tm.on_time(clock())
    [retry] = tm.outbox
    assert (retry.leg, retry.qty, retry.key) == ("stop", 70, f"tg:{trade.id}:stop:2")


def test_rejected_entry_rejects_trade(tm, clock, market):
    trade = tm.submit(req())
    [entry] = tm.outbox
    tm.outbox = []
    tm.on_intent_closed(entry, OrderStatus.REJECTED, 100, "insufficient buying power")
    assert trade.state is TradeState.REJECTED and trade.reason == "insufficient buying power"
    assert feed(tm, market, 50.0) == []


def test_limit_entry_timeout_cancels(tm, clock, market):
    trade = tm.submit(req(entry_type=OrderType.LIMIT, limit_price=99.0, entry_timeout_s=30))
    tm.outbox = []
    clock.advance(30)
    tm.on_time(clock())
    assert tm.cancels == [trade.entry_key]
    tm.on_intent_closed(_entry_intent(trade), OrderStatus.CANCELLED, 100, "cancelled by client")
    assert trade.state is TradeState.CANCELLED


def test_stop_while_entry_working_cancels_entry_and_flattens_late_fill(tm, clock, market):
    trade = tm.submit(req(entry_type=OrderType.LIMIT, limit_price=100.0))
    entry = fill_entry(tm, clock, trade, qty=50)
    [stop] = feed(tm, market, 97.0)
    assert tm.cancels == [trade.entry_key] and stop.qty == 50
    tm.on_fill(entry, 50, 100.0, clock(), 1.0)  # the rest filled before the cancel landed
    [extra] = tm.outbox
    assert extra.leg == "stop" and extra.qty == 50 and extra.key.endswith(":stop:2")


def test_an_entry_fill_after_its_cancel_makes_the_trade_live_again_with_its_stop(tm, clock, market):
    """A fill that raced the entry's cancel is applied late (the executor's late fill): the position exists, so the
    trade is live again - open, its stop armed, its snapshot saying so, restored by a restart.  Found by an
    independent review: it stayed cancelled (a final state, never restored) with a position that lost its stop at
    the next restart."""
    trade = tm.submit(req(entry_type=OrderType.LIMIT, limit_price=100.0))
    entry = _entry_intent(trade)
    tm.outbox = []
    tm.on_intent_closed(entry, OrderStatus.CANCELLED, trade.request.qty, "cancelled by client")
    assert trade.state is TradeState.CANCELLED and trade.id not in {t.id for t in tm.live_trades()}
    tm.on_fill(entry, 100, 100.0, clock(), 1.0)
    assert trade.state is TradeState.OPEN and trade.id in {t.id for t in tm.live_trades()}
    assert [e["event"] for e in trade.history][-3:] == ["revived", "entry_fill", "state"]
    [stop] = feed(tm, market, 97.0)
    assert stop.leg == "stop" and stop.qty == 100


def test_volatility_update_never_loosens_stop_by_default(tm, clock, market):
    trade = tm.submit(req(rules=[StopLoss(distance=1.0), TakeProfit(distance=2.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    market.vol["AAA"] = VolSnapshot("AAA", 4.0, 3.0, clock())
    tm.on_volatility(market.vol["AAA"])
    assert tm.stop_price(trade) == D("98.0")  # would be 96 - refused
    assert tm.grid("AAA").price(trade.targets[0].level_x) == D("108")  # targets follow
    market.vol["AAA"] = VolSnapshot("AAA", 1.0, 3.0, clock())
    tm.on_volatility(market.vol["AAA"])
    assert tm.stop_price(trade) == D("99.0")  # tightening is fine


def test_volatility_update_may_loosen_when_rule_allows(tm, clock, market):
    trade = tm.submit(req(rules=[StopLoss(distance=1.0, allow_loosen=True)]))
    fill_entry(tm, clock, trade, price=100.0)
    market.vol["AAA"] = VolSnapshot("AAA", 4.0, 3.0, clock())
    tm.on_volatility(market.vol["AAA"])
    assert tm.stop_price(trade) == D("96.0")


def test_distance_to_stop_in_atr(tm, clock, market):
    trade = tm.submit(req(rules=[StopLoss(distance=1.0)]))
    assert math.isinf(tm.distance_to_stop(trade))  # no stop armed before the fill
    fill_entry(tm, clock, trade, price=100.0)
    market.tick("AAA", 99.0)
    assert tm.distance_to_stop(trade) == pytest.approx(0.5)
    short = tm.submit(req(side=Side.SHORT, rules=[StopLoss(distance=1.0)]))
    fill_entry(tm, clock, short, price=100.0)
    market.tick("AAA", 100.0, 101.0)
    assert tm.distance_to_stop(short) == pytest.approx(0.5)
    tick = market.tick("AAA", 99.0, 101.0)
    assert tm.symbol_risk_at("AAA", tick) == pytest.approx(min(tm.distance_to_stop(trade, tick),
                                                             tm.distance_to_stop(short, tick)))


def test_idempotency_keys_unique_across_trades_and_legs(tm, clock, market):
    keys = set()
    for _ in range(5):
        t = tm.submit(req(rules=[StopLoss(distance=1.0), TakeProfit(fraction=0.5, distance=1.0),
                                 TakeProfit(fraction=0.5, distance=2.0)]))
        fill_entry(tm, clock, t)
        keys.add(t.entry_key)
    for i in feed(tm, market, 103.0, 90.0):
        assert i.key not in keys
        keys.add(i.key)
    assert len(keys) == 5 + 5 * 2  # entry, tp1 at 103, then the stop for the rest at 90


def test_pullback_inside_one_chunk_fires_trailing_stop(tm, clock, market):
    """In one chunk of ticks the price rises then falls back by the trail distance: the touch must be seen."""
    trade = tm.submit(req(rules=[TrailingStop(distance=1.0)]))
    fill_entry(tm, clock, trade, price=100.0)
    handler = TickHandler(tm)
    handler.process([market.tick("AAA", bid) for bid in (101.0, 104.0, 102.0, 103.5)])  # 104 -> 102 = 1 ATR
    [ex] = tm.outbox
    assert ex.leg == "stop" and ex.trigger.rule == "trailing_stop" and ex.trigger.price == 102.0


def test_the_symbols_with_trades_in_some_states_and_their_trades(tm, clock, market):
    """The watchdog's per-check question (runtime/watchdog.py): which symbols have an open or exiting trade -
    answered per symbol, not per trade; and the trades themselves when an alert names them."""
    market.vol["BBB"] = VolSnapshot("BBB", 2.0, 3.0, clock())
    market.tick("BBB", 50.0, 50.02)
    watched = frozenset({TradeState.OPEN, TradeState.EXITING})
    a1, a2 = tm.submit(req()), tm.submit(req())
    b = tm.submit(TradeRequest(symbol="BBB", side=Side.LONG, qty=10, rules=[StopLoss(distance=1.0)]))
    assert tm.symbols_in(watched) == []  # entries still pending
    assert tm.symbols_in({TradeState.PENDING_ENTRY}) == ["AAA", "BBB"]
    intents = {i.trade_id: i for i in tm.outbox}
    tm.outbox = []
    for trade in (a1, a2, b):
        tm.on_fill(intents[trade.id], trade.request.qty, 100.0 if trade.symbol == "AAA" else 50.0, clock(), 0)
    assert tm.symbols_in(watched) == ["AAA", "BBB"] and tm.trades_in("AAA", watched) == [a1, a2]
    for exit_ in feed(tm, market, 10.0):  # both AAA stops cross: their trades exit, then close
        tm.on_fill(exit_, exit_.qty, 10.0, clock(), 0)
    assert tm.symbols_in(watched) == ["BBB"] and tm.trades_in("AAA", watched) == []
    [exit_] = feed(tm, market, 10.0, symbol="BBB")
    assert tm.symbols_in(watched) == ["BBB"]  # exiting is watched too
    tm.on_fill(exit_, exit_.qty, 10.0, clock(), 0)
    assert {a1.state, a2.state, b.state} == {TradeState.CLOSED}
    assert tm.symbols_in(watched) == [] and tm.trades_in("BBB", watched) == []
    assert tm.live_trades() == [] and len(tm.trades) == 3  # ended trades stay known; only the index drops them


# ------------------------------------------------------------------------------------- exit rehearsal


def _state(tm, trades):
    """Everything of the manager a rehearsal must leave as it was."""
    return ([tm.snapshot(t) for t in trades], [len(t.history) for t in trades], len(tm.book),
            [tm.book.level_of(leg.level_id) for t in trades for leg in t.legs()], list(tm.outbox), list(tm.cancels))


def test_rehearse_exit_builds_the_exit_a_crossing_then_sends_and_changes_nothing(tm, clock, market):
    """runtime/exit_rehearsal.py: the intent of the symbol's nearest stop, made by a fire's own code - the key, the
    quantity, the order and the trigger's level are those of the exit the crossing then sends - and the trades, the
    book and the outbox are untouched."""
    near, far = tm.submit(req(rules=[StopLoss(distance=1.0)])), tm.submit(req(qty=30, rules=[StopLoss(distance=1.5)]))
    for trade in (near, far):
        fill_entry(tm, clock, trade)
    before = _state(tm, [near, far])
    intent, data = tm.rehearse_exit("AAA")
    assert _state(tm, [near, far]) == before
    assert (intent.key, intent.trade_id, intent.qty, intent.action, intent.priority) == (
        f"tg:{near.id}:stop:1", near.id, 100, Action.SELL, PriorityClass.EXIT_CRITICAL)
    assert data["key"] == intent.key and data["trigger"]["level"] == "98.00" and data["trigger"]["rule"] == "stop_loss"
    assert tm.rehearse_exit("ZZZ") is None  # no stop booked for it
    [exit_] = feed(tm, market, 98.0)
    assert (exit_.key, exit_.qty, exit_.action, exit_.order_type, exit_.limit_price, exit_.priority) == (
        intent.key, intent.qty, intent.action, intent.order_type, intent.limit_price, intent.priority)
    assert (exit_.trigger.rule, exit_.trigger.level) == (intent.trigger.rule, intent.trigger.level)
    # the fired stop left the book: the next rehearsal is the other trade's, whose exit would be its first
    assert tm.rehearse_exit("AAA")[0].key == f"tg:{far.id}:stop:1"


def test_rehearse_exit_of_an_unfilled_or_halted_trade_is_none(tm, clock, market):
    trade = tm.submit(req())
    assert tm.rehearse_exit("AAA") is None  # the entry is not filled: its stop is not booked
    fill_entry(tm, clock, trade)
    assert tm.rehearse_exit("AAA") is not None
    tm.halt(trade.id, "test")  # halted: nothing automated is sent for it, nothing is rehearsed
    assert tm.rehearse_exit("AAA") is None
