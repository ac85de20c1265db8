"""The shared vocabulary's values: a tick is an immutable value, read by name, priced per source."""

import pytest

from tickguard.core.model import Tick, TriggerSource


def test_a_tick_cannot_be_changed_once_made():
    """Every component that keeps a tick (a symbol's last quote, a trigger's evidence) holds the same object: none may
    alter it under the others."""
    tick = Tick("AAA", 19_900, 20_000, 0, 1.0, 10, 11, 7)
    for name in Tick._fields:
        with pytest.raises(AttributeError):
            setattr(tick, name, 1)
    with pytest.raises(AttributeError):
        tick.extra = 1  # type: ignore[attr-defined]
    assert tick == Tick("AAA", 19_900, 20_000, 0, 1.0, 10, 11, 7) and hash(tick) == hash(Tick(*tick))


def test_a_tick_reads_by_name_with_its_sequence_number_defaulting_to_zero():
    tick = Tick(symbol="AAA", bid=19_900, ask=20_000, last=0, size=1.0, ts_ns=10, recv_ns=11)
    assert (tick.symbol, tick.bid, tick.ask, tick.last, tick.size, tick.ts_ns, tick.recv_ns, tick.seq) == \
        ("AAA", 19_900, 20_000, 0, 1.0, 10, 11, 0)


@pytest.mark.parametrize(("source", "units"), [(TriggerSource.BID, 19_900), (TriggerSource.ASK, 20_002),
                                               (TriggerSource.MID, 19_951), (TriggerSource.LAST, 0)])
def test_a_ticks_price_per_source_the_mid_exact_in_half_ticks(source, units):
    assert Tick("AAA", 19_900, 20_002, 0, 1.0, 10, 11).price(source) == units


def test_an_unresolved_source_cannot_price_a_tick():
    with pytest.raises(ValueError, match="must be resolved"):
        Tick("AAA", 19_900, 20_000, 0, 1.0, 10, 11).price(TriggerSource.AUTO)
