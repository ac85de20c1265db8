"""The index of live trades (``core.live_trades``) against a walk over every trade, after any sequence of state
changes - whoever makes them (the manager, a halt, a restore from a snapshot)."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickguard.core.exit_rules import StopLoss
from tickguard.core.live_trades import LiveTrades
from tickguard.core.model import Side, TradeState
from tickguard.core.trades import Trade, TradeRequest

SYMBOLS = ("AAA", "BBB", "CCC")
STATES = list(TradeState)


def trade(n: int, symbol: str) -> Trade:
    request = TradeRequest(symbol=symbol, side=Side.LONG, qty=1, rules=[StopLoss(distance=1.0)])
    return Trade(f"T{n:05d}", request, 1, 0)


def walked(trades: list[Trade]) -> tuple[list[str], dict[str, dict[TradeState, int]]]:
    """What the index must say, by a walk (the reference)."""
    live = [t.id for t in trades if not t.state.is_final]
    counts: dict[str, dict[TradeState, int]] = {}
    for t in trades:
        if not t.state.is_final:
            by_state = counts.setdefault(t.symbol, {})
            by_state[t.state] = by_state.get(t.state, 0) + 1
    return live, counts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.sampled_from(STATES)), max_size=60),
       st.lists(st.sampled_from(SYMBOLS), min_size=8, max_size=8))
def test_the_index_agrees_with_a_walk_after_any_state_changes(changes, symbols):
    index = LiveTrades()
    trades = [trade(n, symbol) for n, symbol in enumerate(symbols)]
    for t in trades:
        index.add(t)
    for n, state in changes:
        trades[n].state = state
        live, counts = walked(trades)
        assert sorted(t.id for t in index.trades()) == sorted(live)
        assert len(index) == len(live)
        for symbol in SYMBOLS:
            expected = counts.get(symbol, {})
            assert {s: index.count(symbol, s) for s in STATES if index.count(symbol, s)} == expected
            assert sorted(t.id for t in index.of_symbol(symbol)) == sorted(
                t.id for t in trades if t.symbol == symbol and not t.state.is_final)
        for states in ({TradeState.OPEN, TradeState.EXITING}, {TradeState.HALTED}, {TradeState.PENDING_ENTRY}):
            assert sorted(index.symbols_in(states)) == sorted(
                {t.symbol for t in trades if t.state in states and not t.state.is_final})


def test_a_live_trade_keeps_its_place_and_one_live_again_comes_last():
    index = LiveTrades()
    a, b, c = trade(1, "AAA"), trade(2, "AAA"), trade(3, "BBB")
    for t in (a, b, c):
        index.add(t)
    a.state = TradeState.OPEN
    a.state = TradeState.EXITING
    assert [t.id for t in index.trades()] == ["T00001", "T00002", "T00003"]  # oldest first, whatever moved
    a.state = TradeState.CLOSED
    assert [t.id for t in index.trades()] == ["T00002", "T00003"]
    a.state = TradeState.HALTED  # an over-fill on a closed trade halts it: live again, and watched again
    assert [t.id for t in index.trades()] == ["T00002", "T00003", "T00001"]
    assert index.count("AAA", TradeState.HALTED) == 1


def test_a_symbol_without_live_trades_leaves_the_index():
    index = LiveTrades()
    a = trade(1, "AAA")
    index.add(a)
    a.state = TradeState.OPEN
    assert index.symbols_in({TradeState.OPEN}) == ["AAA"]
    a.state = TradeState.CLOSED
    assert index.symbols_in({TradeState.OPEN, TradeState.PENDING_ENTRY, TradeState.EXITING}) == []
    assert index.of_symbol("AAA") == [] and len(index) == 0


def test_a_trade_added_in_a_final_state_is_not_live_until_it_is():
    index = LiveTrades()
    a = trade(1, "AAA")
    a.state = TradeState.CLOSED  # before it is indexed (as a restore may build it)
    index.add(a)
    assert index.trades() == []
    a.state = TradeState.HALTED
    assert [t.id for t in index.trades()] == ["T00001"]


def test_a_copy_of_a_trade_does_not_move_the_original_in_the_index():
    """``dataclasses.replace`` copies the watcher too: the copy's changes must not take the original out (a live
    trade missing from the index is a blind trade the watchdog never reports)."""
    index = LiveTrades()
    a = trade(1, "AAA")
    index.add(a)
    a.state = TradeState.OPEN
    copy = dataclasses.replace(a)
    copy.state = TradeState.CLOSED
    assert index.trades() == [a] and index.symbols_in({TradeState.OPEN}) == ["AAA"]
    index.add(a)  # again: nothing changes
    assert index.count("AAA", TradeState.OPEN) == 1
    a.state = TradeState.CLOSED
    assert index.trades() == []


def test_final_states_are_refused_rather_than_answered_empty():
    index = LiveTrades()
    with pytest.raises(ValueError, match="closed"):
        index.symbols_in({TradeState.OPEN, TradeState.CLOSED})
    with pytest.raises(ValueError, match="cancelled"):
        index.trades_in("AAA", {TradeState.CANCELLED})
