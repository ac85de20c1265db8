"""The per-account entry breaker (core/entry_breaker.py)."""

from __future__ import annotations

from tickguard.core.entry_breaker import SECOND, BreakerLimits, EntryBreaker


def test_the_same_reason_n_times_in_the_window_pauses_that_account_for_the_cool_down():
    b = EntryBreaker(BreakerLimits(rejections=3, window_ns=10 * SECOND, cool_down_ns=60 * SECOND))
    t = 1_000 * SECOND
    assert b.record("A", "insufficient buying power (needs 29,197, has 24,516)", t) is None
    assert b.record("A", "insufficient buying power (needs 31,002, has 24,516)", t + SECOND) is None
    assert b.record("B", "insufficient buying power (needs 1, has 0)", t + SECOND) is None  # another account
    trip = b.record("A", "Insufficient buying power (needs 5, has 4)", t + 2 * SECOND)  # figures do not count
    assert trip is not None and trip.until_ns == t + 62 * SECOND
    assert "account A" in trip.describe() and "exits still go" in trip.describe()
    assert b.paused("A", t + 61 * SECOND) is trip and b.paused("A", t + 62 * SECOND) is None
    assert b.paused("B", t + 3 * SECOND) is None


def test_different_reasons_or_a_slow_trickle_do_not_trip():
    b = EntryBreaker(BreakerLimits(rejections=3, window_ns=10 * SECOND, cool_down_ns=60 * SECOND))
    t = 0
    assert b.record("A", "no permissions", t) is None
    assert b.record("A", "market closed", t) is None
    assert b.record("A", "no permissions", t + 5 * SECOND) is None
    assert b.record("A", "no permissions", t + 11 * SECOND) is None  # the first has left the window
    assert b.paused("A", t + 12 * SECOND) is None and b.tripped == 0
