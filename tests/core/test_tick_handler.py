import math

import pytest

from tickguard.core.guards import Guard
from tickguard.core.model import Tick
from tickguard.core.price_grid import CENT, FAR
from tickguard.core.tick_handler import TickHandler, tick_problem
from tickguard.core.trail_groups import Marks


def t(bid, ask, ts=1, last=None, size=1.0, symbol="A", seq=0):
    """A tick as an adapter makes it from feed prices (0.01 grid); a negative last is kept as given."""
    last_units = -2 if last is not None and last < 0 else CENT.units(last)
    bid_units = -2 if bid < 0 else CENT.units(bid)
    return Tick(symbol, bid_units, CENT.units(ask), last_units, size, ts, ts, seq)


@pytest.mark.parametrize(
    ("tick", "reason"),
    [
        (t(math.nan, 1.0), "non_positive_price"),  # "no price" from the feed is 0 units
        (t(1.0, math.inf), "non_positive_price"),
        (t(0.0, 1.0), "non_positive_price"),
        (t(-1.0, 1.0), "non_positive_price"),
        (t(1.01, 1.0), "crossed_quote"),
        (t(1.0, 1.1, last=-3.0), "bad_last_price"),
        (t(1.0, 1.1, size=-1), "bad_size"),
    ],
)
def test_malformed_ticks_are_named(tick, reason):
    assert tick_problem(tick, None) == reason


def test_locked_quote_is_valid_and_no_last_allowed():
    assert tick_problem(t(1.0, 1.0), None) is None
    assert tick_problem(t(1.0, 1.1, last=math.nan), None) is None


def test_dropped_ticks_are_counted_and_never_evaluated():
    seen = []

    class Recorder:
        def guard(self, symbol):
            return Guard(FAR, -FAR, FAR, -FAR)  # every tick crosses

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
    assert th.counters.dropped == {"time_backwards": 1, "crossed_quote": 1, "non_positive_price": 1}
    assert [x.bid for x in seen] == [CENT.units(10.0), CENT.units(1.0)]


def test_unknown_mode_refused():
    with pytest.raises(ValueError, match="tick mode must be 'batch' or 'per_tick'"):
        TickHandler(mode="sometimes")
