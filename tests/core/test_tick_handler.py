import math

import pytest

from tickguard.core.guards import Guard
from tickguard.core.model import Tick
from tickguard.core.tick_handler import TickHandler, tick_problem
from tickguard.core.trail_groups import Marks


def t(bid, ask, ts=1, last=math.nan, size=1.0, symbol="A", seq=0):
    return Tick(symbol, bid, ask, last, size, ts, ts, seq)


@pytest.mark.parametrize(
    ("tick", "reason"),
    [
        (t(math.nan, 1.0), "non_finite_price"),
        (t(1.0, math.inf), "non_finite_price"),
        (t(0.0, 1.0), "non_positive_price"),
        (t(-1.0, 1.0), "non_positive_price"),
        (t(1.01, 1.0), "crossed_quote"),
        (t(1.0, 1.1, last=-3.0), "bad_last_price"),
        (t(1.0, 1.1, size=-1), "bad_size"),
    ],
)
def test_malformed_ticks_are_named(tick, reason):
    assert tick_problem(tick, None) == reason


def test_locked_quote_is_valid_and_nan_last_allowed():
    assert tick_problem(t(1.0, 1.0), None) is None
    assert tick_problem(t(1.0, 1.1, last=math.nan), None) is None


def test_dropped_ticks_are_counted_and_never_evaluated():
    seen = []

    class Recorder:
        def guard(self, symbol):
            return Guard(math.inf, -math.inf, math.inf, -math.inf)  # every tick crosses

        def marks_for(self, symbol):
            return Marks()

        def watch_guards(self, listener):
            pass

        def evaluate(self, tick):
            seen.append(tick)

        def symbol_risk_at(self, symbol, tick):
            return 0.0

    th = TickHandler(Recorder())
    good = t(10.0, 10.1, ts=5)
    th.process([good, t(10.0, 10.1, ts=4), t(10.2, 10.1, ts=6), t(math.nan, 10.1, ts=7), t(1.0, 1.0, ts=8)])
    assert th.counters.accepted == 2  # the good tick and a locked quote
    assert th.counters.dropped == {"time_backwards": 1, "crossed_quote": 1, "non_finite_price": 1}
    assert [x.bid for x in seen] == [10.0, 1.0]


def test_unknown_mode_refused():
    with pytest.raises(ValueError, match="tick mode must be 'batch' or 'per_tick'"):
        TickHandler(mode="sometimes")
