"""The order state machine: the states of one broker order and the legal moves between them, as data.

The main roads (the full table is ``TRANSITIONS`` below)::

    new ─▶ submitting ─▶ submitted ─▶ partially_filled ─▶ filled
    submitting | submitted | partially_filled ─▶ cancelling ─▶ cancelled   (or filled: the fill won the race)
    submitting | submitted | partially_filled ─▶ retry_wait ─▶ submitting  (same key, after a backoff)
    submitting | submitted | partially_filled | cancelling | retry_wait ─▶ rejected
    submitting | submitted | partially_filled | cancelling ─▶ unknown ─▶ submitting | submitted | ... | final

``advance(current, new)`` says whether a move is legal.  A caller never applies an illegal move: it reports it
as an anomaly (the executor logs it with the order's key and history, counts it, and keeps the order where
it was).

States
* ``new``: accepted by the executor, not yet handed over for sending.
* ``submitting``: journaled and handed to the broker adapter; the broker has not acknowledged it yet.
* ``submitted``: the broker holds it, nothing filled yet (the executor's old ``working``).
* ``partially_filled``: the broker holds it, part of it is filled (IB itself still says ``Submitted``).
* ``cancelling``: a cancel was sent; until the broker confirms, the order can still fill.
* ``retry_wait``: an extra state, not a broker state - the broker refused the order for a reason that
  passes (pacing, connectivity), and the executor will send it again with the *same* idempotency key after a
  backoff.  It is not ``submitting`` (nothing is at the broker and nothing is in flight) nor ``rejected``
  (it is not over), so it has a name of its own rather than a flag beside another state.
* ``unknown``: the engine cannot establish the state, e.g. the journal says it was sent but the broker does
  not know it, or a journal holds a status this version cannot read.  Recovery resolves it: the broker's
  answer (adopt / close) or, if the broker never heard of it, sending it again.
* ``filled``, ``cancelled``, ``rejected``: final.

Finals have no way out.  A fill that arrives after ``cancelled`` or ``rejected`` - a real IB race: the
execution was on its way when the cancel was confirmed - is *not* a state change: fills are money and are
applied by execution id whatever the state (the trade's position and the record's filled quantity move),
while the order's state stays final.  That keeps "the trade hears exactly one close per order" true, so a
late fill can never make the trade manager close, re-arm or retry a leg twice; the executor logs and counts
such late fills.  So ``cancelled → filled`` is deliberately absent from the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class OrderStatus(StrEnum):
    NEW = "new"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    CANCELLING = "cancelling"
    RETRY_WAIT = "retry_wait"
    UNKNOWN = "unknown"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def at_broker(self) -> bool:
        """The broker has acknowledged the order and may still fill it (an acknowledgement is no news)."""
        return self in AT_BROKER


_S = OrderStatus
FINAL = frozenset({_S.FILLED, _S.CANCELLED, _S.REJECTED})
AT_BROKER = frozenset({_S.SUBMITTED, _S.PARTIALLY_FILLED, _S.CANCELLING})

# from -> the states it may move to.  Staying in the same state is not a move (see ``advance``).
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    _S.NEW: frozenset({_S.SUBMITTING}),
    _S.SUBMITTING: frozenset({
        _S.SUBMITTED,  # acknowledged
        _S.PARTIALLY_FILLED, _S.FILLED,  # a fill overtook the acknowledgement
        _S.CANCELLING,  # cancel sent before the acknowledgement
        _S.CANCELLED,  # cancelled before it left, or by the broker
        _S.REJECTED, _S.RETRY_WAIT,  # refused: for good, or for a reason that passes
        _S.UNKNOWN,  # journaled as sent, the broker does not know it
    }),
    _S.SUBMITTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLING, _S.CANCELLED, _S.REJECTED,
                             _S.RETRY_WAIT, _S.UNKNOWN}),
    _S.PARTIALLY_FILLED: frozenset({_S.FILLED, _S.CANCELLING, _S.CANCELLED, _S.REJECTED, _S.RETRY_WAIT, _S.UNKNOWN}),
    # A cancel can lose the race to a fill (filled), be answered by a refusal (rejected), or be lost with the
    # engine (unknown).  Never retry_wait: an order being cancelled is not sent again.
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FILLED, _S.REJECTED, _S.UNKNOWN}),
    _S.RETRY_WAIT: frozenset({
        _S.SUBMITTING,  # sent again, same key
        _S.SUBMITTED, _S.PARTIALLY_FILLED,  # the broker holds it after all (adopted): never send it twice
        _S.FILLED,  # an execution of the refused attempt completed it
        _S.CANCELLED, _S.REJECTED,  # cancelled while waiting, or refused for good
    }),
    _S.UNKNOWN: frozenset({_S.SUBMITTING, _S.SUBMITTED, _S.PARTIALLY_FILLED, _S.CANCELLING, _S.FILLED,
                           _S.CANCELLED, _S.REJECTED}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
}

LEGAL: frozenset[tuple[OrderStatus, OrderStatus]] = frozenset(
    (src, dst) for src, targets in TRANSITIONS.items() for dst in targets
)

# After a fill that does not complete the order: only a plain working order changes state.  ``retry_wait``
# keeps waiting to send the rest, ``cancelling`` keeps waiting for the cancel, ``unknown`` stays unresolved.
PARTIAL_FILL_MOVES: Mapping[OrderStatus, OrderStatus] = {
    _S.SUBMITTING: _S.PARTIALLY_FILLED,
    _S.SUBMITTED: _S.PARTIALLY_FILLED,
}


class Outcome(StrEnum):
    MOVED = "moved"  # a legal move: apply it
    SAME = "same"  # already there (a repeated report): nothing to do, nothing wrong
    ILLEGAL = "illegal"  # not in the table: report it as an anomaly, never apply it


@dataclass(slots=True, frozen=True)
class Transition:
    current: OrderStatus
    new: OrderStatus
    outcome: Outcome

    @property
    def moved(self) -> bool:
        return self.outcome is Outcome.MOVED

    @property
    def illegal(self) -> bool:
        return self.outcome is Outcome.ILLEGAL

    def __str__(self) -> str:
        return f"{self.current} -> {self.new} ({self.outcome})"


def advance(current: OrderStatus, new: OrderStatus) -> Transition:
    """Whether ``current → new`` is a legal move.  Pure: the caller applies it, or reports it."""
    if new is current:
        return Transition(current, new, Outcome.SAME)
    return Transition(current, new, Outcome.MOVED if (current, new) in LEGAL else Outcome.ILLEGAL)


def acknowledged(current: OrderStatus, any_filled: bool) -> OrderStatus:
    """The state once the broker says it holds the order (an acknowledgement, or adoption in recovery)."""
    if current.at_broker:
        return current  # no news
    return _S.PARTIALLY_FILLED if any_filled else _S.SUBMITTED


def after_fill(current: OrderStatus, complete: bool) -> OrderStatus:
    """The state after a fill was applied.  Finals stay final: a late fill is money, not a transition."""
    if current.is_final:
        return current
    if complete:
        return _S.FILLED
    return PARTIAL_FILL_MOVES.get(current, current)

