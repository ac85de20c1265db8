"""Property tests of the trigger book against a brute-force reference (levels in integer grid units)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickguard.core.model import TriggerSource
from tickguard.core.price_grid import FAR
from tickguard.core.trigger_book import LevelKind, TriggerBook

SYMBOLS = ["A", "B"]
SOURCES = [TriggerSource.BID, TriggerSource.ASK]
prices = st.integers(min_value=90, max_value=110).map(lambda p: 2 * p)  # coarse grid: many equal levels

op = st.one_of(
    st.tuples(st.just("upsert"), st.integers(0, 30), st.sampled_from(SYMBOLS), st.sampled_from(SOURCES),
              st.sampled_from([1, -1]), st.sampled_from(list(LevelKind)), prices),
    st.tuples(st.just("remove"), st.integers(0, 30)),
    st.tuples(st.just("query"), st.sampled_from(SYMBOLS), st.sampled_from(SOURCES), st.sampled_from([1, -1]),
              prices, prices),
)


class Reference:
    def __init__(self):
        self.levels = {}

    def upsert(self, lid, sym, src, sign, kind, x):
        self.levels[lid] = (sym, src, sign, kind, x)

    def remove(self, lid):
        self.levels.pop(lid, None)

    def pop_crossed(self, sym, src, sign, lo, hi):
        out = []
        for lid, (s, so, sg, kind, x) in list(self.levels.items()):
            if (s, so, sg) != (sym, src, sign):
                continue
            if (kind is LevelKind.STOP and lo <= x) or (kind is LevelKind.TARGET and hi >= x):
                out.append(lid)
                del self.levels[lid]
        return out


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=80))
def test_book_matches_brute_force(ops):
    book, ref = TriggerBook(), Reference()
    reported = set()
    for o in ops:
        if o[0] == "upsert":
            book.upsert(*o[1:])
            ref.upsert(*o[1:])
            reported.discard(o[1])
        elif o[0] == "remove":
            assert book.remove(o[1]) == (o[1] in ref.levels)
            ref.remove(o[1])
        else:
            _, sym, src, sign, a, b = o
            lo, hi = min(a, b), max(a, b)
            got = book.pop_crossed(sym, src, sign, lo, hi)
            want = ref.pop_crossed(sym, src, sign, lo, hi)
            assert sorted(got) == sorted(want)  # none missed, none extra
            assert len(got) == len(set(got))  # none twice in one answer
            assert not (set(got) & reported)  # none reported again without being re-armed
            reported |= set(got)
        assert len(book) == len(ref.levels)
        for sym in SYMBOLS:  # the exit rehearsal's stop: the highest signed stop level of the symbol's books
            stops = [x for s, _, _, kind, x in ref.levels.values() if s == sym and kind is LevelKind.STOP]
            nearest = book.nearest_stop(sym)
            if not stops:
                assert nearest is None
                continue
            level_id, source, sign = nearest
            assert ref.levels[level_id] == (sym, source, sign, LevelKind.STOP, max(stops))
        assert sorted(book.symbols()) == sorted({s for s, *_ in ref.levels.values()})


@settings(max_examples=200, deadline=None)
@given(st.lists(prices, min_size=1, max_size=20), st.lists(st.tuples(prices, prices), min_size=1, max_size=20))
def test_gap_through_levels_fires_each_exactly_once(levels, ranges):
    """A price path given as successive [low, high] ranges (gaps included) fires every stop it reaches."""
    book = TriggerBook()
    for i, x in enumerate(levels):
        book.upsert(i, "A", TriggerSource.BID, 1, LevelKind.STOP, x)
    fired: list[int] = []
    lowest = FAR
    for a, b in ranges:
        lo, hi = min(a, b), max(a, b)
        lowest = min(lowest, lo)
        fired += book.pop_crossed("A", TriggerSource.BID, 1, lo, hi)
    assert sorted(fired) == [i for i, x in enumerate(levels) if x >= lowest]


def test_order_of_report_stops_first_highest_first_then_targets():
    book = TriggerBook()
    book.upsert(1, "A", TriggerSource.BID, 1, LevelKind.STOP, 9900)
    book.upsert(2, "A", TriggerSource.BID, 1, LevelKind.STOP, 9950)
    book.upsert(3, "A", TriggerSource.BID, 1, LevelKind.TARGET, 10100)
    book.upsert(4, "A", TriggerSource.BID, 1, LevelKind.TARGET, 10050)
    assert book.pop_crossed("A", TriggerSource.BID, 1, 9800, 10200) == [2, 1, 4, 3]


def test_inclusive_comparison_and_moving_levels():
    book = TriggerBook()
    book.upsert(1, "A", TriggerSource.BID, 1, LevelKind.STOP, 19900)
    assert book.pop_crossed("A", TriggerSource.BID, 1, 19901, 20000) == []  # half a tick above: holds
    book.upsert(1, "A", TriggerSource.BID, 1, LevelKind.STOP, 19920)  # tightened
    assert book.level_of(1) == 19920
    assert book.pop_crossed("A", TriggerSource.BID, 1, 19920, 20000) == [1]  # touch is enough
    assert 1 not in book


def test_short_side_is_signed_space():
    # A short's stop at 101 (price) is -101 in signed space; an ask of 101 is x = -101 -> fires.
    book = TriggerBook()
    book.upsert(7, "A", TriggerSource.ASK, -1, LevelKind.STOP, -20200)
    assert book.pop_crossed("A", TriggerSource.ASK, -1, -20198, -20000) == []
    assert book.pop_crossed("A", TriggerSource.ASK, -1, -20200, -20000) == [7]


@pytest.mark.parametrize("level", [99.0, math.nan, 19800.0])
def test_a_level_that_is_not_grid_units_is_refused(level):
    book = TriggerBook()
    with pytest.raises(TypeError, match="not grid units"):
        book.upsert(1, "A", TriggerSource.BID, 1, LevelKind.STOP, level)
    assert len(book) == 0 and book.pop_crossed("Z", TriggerSource.BID, 1, 0, FAR) == []


# --- the exact order of what pops, against an independent reference (found unpinned by an independent review:
# --- the property above compares sorted ids only; pop_crossed has a single-stop fast case and a slice path)

_SOURCES = [TriggerSource.BID, TriggerSource.BID, TriggerSource.BID, TriggerSource.ASK]
_SIGNS = [1, 1, 1, -1]
_levels = st.integers(-3, 3)  # few distinct levels: many ties
_ids = st.integers(0, 12)
_op = st.one_of(
    st.tuples(st.just("upsert"), _ids, st.sampled_from("AAAB"), st.sampled_from(_SOURCES), st.sampled_from(_SIGNS),
              st.sampled_from(list(LevelKind)), _levels),
    st.tuples(st.just("remove"), _ids),
    st.tuples(st.just("pop"), st.sampled_from("AAAB"), st.sampled_from(_SOURCES), st.sampled_from(_SIGNS), _levels,
              _levels),
)


class _Reference:
    """Levels by id; a pop returns the crossed stops highest first (a tie: the larger id first), then the crossed
    targets lowest first (a tie: the smaller id first)."""

    def __init__(self) -> None:
        self.levels: dict[int, tuple] = {}  # id -> (symbol, source, sign, kind, level)

    def pop(self, symbol: str, source: TriggerSource, sign: int, low: int, high: int) -> list[int]:
        mine = [(lid, v) for lid, v in self.levels.items() if v[:3] == (symbol, source, sign)]
        stops = sorted(((v[4], lid) for lid, v in mine if v[3] is LevelKind.STOP and v[4] >= low), reverse=True)
        targets = sorted((v[4], lid) for lid, v in mine if v[3] is LevelKind.TARGET and v[4] <= high)
        fired = [lid for _, lid in stops] + [lid for _, lid in targets]
        for lid in fired:
            del self.levels[lid]
        return fired


@settings(max_examples=1500, deadline=None)
@given(st.lists(_op, max_size=60))
def test_pop_crossed_fires_in_the_references_exact_order(ops):
    changes: list[str] = []
    book, ref = TriggerBook(changes.append), _Reference()
    for op in ops:
        changes.clear()
        if op[0] == "upsert":
            book.upsert(*op[1:])
            ref.levels[op[1]] = tuple(op[2:])
        elif op[0] == "remove":
            book.remove(op[1])
            ref.levels.pop(op[1], None)
        else:
            _, symbol, source, sign, a, b = op
            low, high = min(a, b), max(a, b)
            want = ref.pop(symbol, source, sign, low, high)
            assert book.pop_crossed(symbol, source, sign, low, high) == want
            assert changes == ([symbol] if want else [])  # one notice per pop that fired anything
        assert {lid: book.level_of(lid) for lid in ref.levels} == {lid: v[4] for lid, v in ref.levels.items()}
        assert len(book) == len(ref.levels)
        held = sorted(lid for symbol in "AB" for b in book.books(symbol).values() for _, lid in b)
        assert held == sorted(ref.levels)
