"""The order state machine: the table is complete, finals are final, nothing dead-ends, illegal moves are refused."""

from __future__ import annotations

import itertools

import pytest

from tickguard.core.order_state import (
    FINAL,
    TRANSITIONS,
    OrderStatus,
    Outcome,
    acknowledged,
    advance,
    after_fill,
)

S = OrderStatus
ALL = list(OrderStatus)


def successors(state: OrderStatus) -> set[OrderStatus]:
    return set(TRANSITIONS[state])


def reachable_from(start: OrderStatus) -> set[OrderStatus]:
    """Written here, independently of the module: a plain depth-first search over the table."""
    seen, stack = {start}, [start]
    while stack:
        for nxt in successors(stack.pop()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_the_journal_reads_the_same_words():
    """The values are what the journal stores (``orders.status``, 16 characters): renaming one needs a migration."""
    assert [s.value for s in ALL] == ["new", "submitting", "submitted", "partially_filled", "cancelling",
                                      "retry_wait", "unknown", "filled", "cancelled", "rejected"]
    assert all(len(s.value) <= 16 for s in ALL)


def test_the_table_has_an_entry_for_every_state_and_names_only_states():
    assert set(TRANSITIONS) == set(ALL)
    for src, targets in TRANSITIONS.items():
        assert targets <= set(ALL), src
        assert src not in targets, f"{src}: staying put is not a move"


def test_exactly_filled_cancelled_rejected_are_final():
    assert {s for s in ALL if s.is_final} == {S.FILLED, S.CANCELLED, S.REJECTED} == FINAL


@pytest.mark.parametrize("final", sorted(FINAL))
def test_finals_have_no_way_out(final):
    assert TRANSITIONS[final] == frozenset()
    assert all(advance(final, other).illegal for other in ALL if other is not final)


def test_a_fill_after_cancel_is_not_a_transition():
    """Documented choice: a late fill is applied as money, the state stays final (no cancelled -> filled)."""
    assert advance(S.CANCELLED, S.FILLED).illegal
    assert advance(S.REJECTED, S.FILLED).illegal
    assert after_fill(S.CANCELLED, complete=True) is S.CANCELLED
    assert after_fill(S.REJECTED, complete=False) is S.REJECTED


def test_every_state_is_reachable_from_new():
    assert reachable_from(S.NEW) == set(ALL)


def test_no_dead_end_every_path_from_new_can_still_reach_a_final_state():
    for state in reachable_from(S.NEW):
        assert state.is_final or successors(state), f"{state} is a dead end"
        assert reachable_from(state) & FINAL, f"from {state} no final state can be reached"


def test_every_simple_path_from_new_extends_to_a_final_state():
    """Walk every cycle-free path from ``new``: each one, wherever it stops, can be continued to a final state
    without revisiting a state (so no legal history can corner an order)."""
    def walk(path: list[OrderStatus]) -> int:
        here = path[-1]
        if here.is_final:
            return 1
        onward = [n for n in successors(here) if n not in path]
        assert onward, f"{' -> '.join(path)} can only go back to where it has been"
        return sum(walk([*path, n]) for n in onward)

    assert walk([S.NEW]) > 10


def test_the_main_roads_are_legal():
    roads = [
        [S.NEW, S.SUBMITTING, S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED],
        [S.SUBMITTING, S.SUBMITTED, S.CANCELLING, S.CANCELLED],
        [S.SUBMITTED, S.CANCELLING, S.FILLED],  # the fill won the race against the cancel
        [S.SUBMITTING, S.RETRY_WAIT, S.SUBMITTING, S.REJECTED],
        [S.SUBMITTED, S.UNKNOWN, S.SUBMITTING],  # recovery: journaled at the broker, unknown there, sent again
        [S.RETRY_WAIT, S.SUBMITTED],  # adopted: the broker held it after all, never send it twice
    ]
    for road in roads:
        for a, b in itertools.pairwise(road):
            assert advance(a, b).moved, f"{a} -> {b}"


@pytest.mark.parametrize(("current", "new"), [
    (S.FILLED, S.SUBMITTED),  # a status after the end
    (S.SUBMITTED, S.SUBMITTING),  # backwards
    (S.PARTIALLY_FILLED, S.SUBMITTED),  # backwards
    (S.CANCELLING, S.RETRY_WAIT),  # an order being cancelled is never sent again
    (S.CANCELLING, S.SUBMITTED),
    (S.NEW, S.FILLED),
    (S.RETRY_WAIT, S.CANCELLING),  # nothing at the broker to cancel
])
def test_illegal_moves_are_refused(current, new):
    t = advance(current, new)
    assert t.illegal and not t.moved and t.outcome is Outcome.ILLEGAL


def test_advance_is_exactly_the_table():
    for a, b in itertools.product(ALL, ALL):
        expected = Outcome.SAME if a is b else Outcome.MOVED if b in TRANSITIONS[a] else Outcome.ILLEGAL
        assert advance(a, b).outcome is expected, (a, b)


def test_fill_and_acknowledgement_helpers_only_propose_legal_moves():
    """From any state an order can be in once sent; ``new`` has not been sent, so neither can happen to it."""
    for state in set(ALL) - {S.NEW}:
        for flag in (False, True):
            assert not advance(state, after_fill(state, flag)).illegal, (state, flag)
            if not state.is_final:
                assert not advance(state, acknowledged(state, flag)).illegal, (state, flag)
    assert advance(S.NEW, after_fill(S.NEW, True)).illegal
    assert advance(S.NEW, acknowledged(S.NEW, False)).illegal


def test_fills_and_acknowledgements():
    assert after_fill(S.SUBMITTED, complete=False) is S.PARTIALLY_FILLED
    assert after_fill(S.SUBMITTING, complete=False) is S.PARTIALLY_FILLED  # the fill overtook the ack
    assert after_fill(S.RETRY_WAIT, complete=False) is S.RETRY_WAIT  # still waiting to send the rest
    assert after_fill(S.CANCELLING, complete=False) is S.CANCELLING
    assert after_fill(S.CANCELLING, complete=True) is S.FILLED
    assert acknowledged(S.SUBMITTING, any_filled=False) is S.SUBMITTED
    assert acknowledged(S.RETRY_WAIT, any_filled=True) is S.PARTIALLY_FILLED
    assert acknowledged(S.PARTIALLY_FILLED, any_filled=True) is S.PARTIALLY_FILLED  # no news
    assert acknowledged(S.CANCELLING, any_filled=False) is S.CANCELLING
