"""The brute-force replay reference against hand-computed answers.

The reference is what the engine is checked against, so it is checked here on its own: each case is worked out
by hand from the rounding rule (whole ticks, floor(value * unit / T); levels snapped onto the tick grid towards
the entry; touch fires) and is picked so that a reference using floats, or rounding the other way (a level away
from the entry, or a tick count rounded up instead of down), gives a different answer.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from replay_reference import RefTick, first_exits, valid_ticks

T0 = 1_764_000_000_000_000_000
SYM = "XYZ"


def quotes(*rows: tuple) -> list[RefTick]:
    """Ticks seq 1, 2, ... one nanosecond apart after the entry, from (bid, ask) or (bid, ask, last)."""
    out = [(i, SYM, T0 + i, *q, None)[:6] for i, q in enumerate(rows, 1)]
    ticks = valid_ticks(out)[SYM]
    assert len(ticks) == len(rows)  # every hand-written quote is valid
    return ticks


def exits(side: str, rules: list[dict], fills: list[tuple[str, str]] | str, ticks: list[RefTick], *,
          atr: float = 1.0, adr: float = 1.0, tick_size: str = "0.01", updates: tuple = ()) -> dict[str, tuple]:
    """first_exits for one trade entered at T0 by ``fills`` ((qty, price) pairs, or one price for a qty of 1)."""
    fills = [("1", fills)] if isinstance(fills, str) else fills
    entry = [{"ts_ns": T0, "qty": q, "price": p} for q, p in fills]
    trade = {"side": side, "rules": rules, "qty": str(sum(Decimal(q) for q, _ in fills))}
    return first_exits(trade, entry, ticks, {"atr": atr, "adr": adr}, updates, tick_size=Decimal(tick_size))


def stop_at(seq: int) -> dict[str, tuple]:
    return {"stop": ("tick", seq)}


def tp_at(seq: int) -> dict[str, tuple]:
    return {"tp1": ("tick", seq)}


# --- valid_ticks ------------------------------------------------------------------------------------------

def test_valid_ticks_makes_exact_decimals_and_drops_what_the_engine_drops():
    rows = [
        (1, SYM, 10, 169.39, 169.4, None),  # floats become their shortest decimal text
        (2, SYM, 11, "169.38", "169.40", "169.39"),
        (3, SYM, 12, 5, 6, float("nan")),  # ints; a NaN last means "no last"
        (4, SYM, 13, "169.41", "169.40", None),  # crossed
        (5, SYM, 14, 0, "169.40", None),  # bid not > 0
        (6, SYM, 15, float("nan"), 169.4, None),  # not finite
        (7, SYM, 16, float("inf"), float("inf"), None),
        (8, SYM, 17, None, 169.4, None),  # no bid
        (9, SYM, 18, 169.38, 169.4, 0),  # last not > 0
        (10, SYM, 9, 169.38, 169.4, None),  # time going backwards
        (11, SYM, 17, "169.39", "169.39", None),  # bid == ask is fine
    ]
    got = valid_ticks(rows)[SYM]
    assert [t.seq for t in got] == [1, 2, 3, 11]
    assert got[0] == RefTick(1, 10, Decimal("169.39"), Decimal("169.4"), None)
    assert got[1].last == Decimal("169.39") and got[2].last is None and got[2].bid == Decimal(5)


# --- a level lands exactly on a price, and touching it fires ------------------------------------------------

# 169.41 - 0.02 happens to come out as 169.39 in floats too; 169.01 - 0.02 is 168.98999999999998 there
@pytest.mark.parametrize("best", ["169.41", "169.01"])
@pytest.mark.parametrize("trigger", ["bid", "ask"])
def test_long_trailing_level_is_exactly_best_less_distance_and_a_touch_fires(best, trigger):
    b = Decimal(best)
    level = b - Decimal("0.02")
    side = 0 if trigger == "bid" else 1  # which of (bid, ask) carries the trigger price

    def q(p: Decimal) -> tuple[Decimal, Decimal]:
        return (p, p + Decimal("0.01")) if side == 0 else (p - Decimal("0.01"), p)

    rule = {"kind": "trailing_stop", "distance": "0.02", "unit": "price", "trigger": trigger}
    ticks = quotes(q(b), q(level + Decimal("0.01")), q(level))
    assert exits("long", [rule], str(b - Decimal("0.04")), ticks) == stop_at(3)


def test_short_trailing_mirror_fires_on_an_ask_of_exactly_169_39():
    # 169.37 + 0.02 is 169.39000000000001 in floats, which an ask of 169.39 never reaches
    rule = {"kind": "trailing_stop", "distance": 0.02, "unit": "price"}
    ticks = quotes(("169.36", "169.37"), ("169.37", "169.38"), ("169.38", "169.39"))
    assert exits("short", [rule], "169.45", ticks) == stop_at(3)


@pytest.mark.parametrize(("side", "kind", "first", "touch"), [
    ("short", "take_profit", ("0.10", "0.11"), ("0.09", "0.10")),  # 0.3 - 0.2 is 0.09999999999999998
    ("long", "stop_loss", ("0.11", "0.12"), ("0.10", "0.11")),
])
def test_point_three_less_point_two_is_exactly_point_one(side, kind, first, touch):
    rule = {"kind": kind, "distance": 0.2, "unit": "price"}
    want = stop_at(2) if kind == "stop_loss" else tp_at(2)
    assert exits(side, [rule], "0.30", quotes(first, touch)) == want


# --- whole ticks, floored, and levels snapped towards the entry ---------------------------------------------

def test_fx_long_stop_with_half_pip_tick():
    # E = (1.08435 + 1.08440) / 2 = 1.084375; 0.001895 / 0.00005 = 37.9 -> 37 ticks = 0.00185;
    # E - D = 1.082525 -> ceiled to 1.08255 (floored, or with 37.9 ticks, it would be 1.08250)
    rule = {"kind": "stop_loss", "distance": 1, "unit": "atr"}
    ticks = quotes(("1.08260", "1.08265"), ("1.08255", "1.08260"))
    got = exits("long", [rule], [("1", "1.08435"), ("1", "1.08440")], ticks, atr=0.001895, tick_size="0.00005")
    assert got == stop_at(2)


def test_fx_short_target_with_pip_tick_and_five_decimal_quotes():
    # 0.5 * 0.0073 / 0.0001 = 36.5 -> 36 ticks = 0.0036; E - D = 1.08073 -> ceiled (nearer) to 1.0808
    # (floored it would be 1.0807, and with 36.5 ticks 1.08068 -> 1.0807)
    rule = {"kind": "take_profit", "distance": 0.5, "unit": "adr"}
    ticks = quotes(("1.08076", "1.08081"), ("1.08075", "1.08080"))
    assert exits("short", [rule], "1.08433", ticks, adr=0.0073, tick_size="0.0001") == tp_at(2)


BRK_FILLS = [("1", "600000.00"), ("1", "600000.01"), ("1", "600000.01")]  # E = 600000.00666..., exactly


@pytest.mark.parametrize(("rule", "first", "touch", "want"), [
    # 1.7 * 9876.54 = 16790.118 -> 16790.11; E - D = 583209.8966... -> ceiled to 583209.90
    ({"kind": "stop_loss", "distance": 1.7}, ("583209.91", "583209.95"), ("583209.90", "583209.95"), stop_at(2)),
    # 2.5 * 9876.54 = 24691.35; E + D = 624691.3566... -> floored to 624691.35
    ({"kind": "take_profit", "distance": 2.5}, ("624691.34", "624691.40"), ("624691.35", "624691.40"), tp_at(2)),
])
def test_brk_a_sized_prices_with_atr_distances(rule, first, touch, want):
    assert exits("long", [rule], BRK_FILLS, quotes(first, touch), atr=9876.54) == want


# A later fill moves the stop only if tighter, so the fills come in the order that lets the snapped level show.
COARSE_FILLS = {("0.05", "long"): [("1", "100.00"), ("1", "100.05")],
                ("0.05", "short"): [("1", "100.05"), ("1", "100.00")],
                ("0.25", "long"): [("1", "50.00"), ("1", "50.25")],
                ("0.25", "short"): [("1", "50.25"), ("1", "50.00")]}


@pytest.mark.parametrize(("tick_size", "side", "rule", "first", "touch", "want"), [
    # T 0.05, E 100.025: 1.23 / 0.05 = 24.6 -> 24 ticks = 1.20
    # long stop 98.825 -> ceiled 98.85 (other way: 98.80; with 24.6 ticks: 98.795 -> 98.80)
    ("0.05", "long", {"kind": "stop_loss", "distance": 1}, ("98.90", "98.95"), ("98.85", "98.90"), stop_at(2)),
    # short stop 101.225 -> floored 101.20 (other way: 101.25; with 24.6 ticks: 101.255 -> 101.25)
    ("0.05", "short", {"kind": "stop_loss", "distance": 1}, ("101.10", "101.15"), ("101.15", "101.20"), stop_at(2)),
    # T 0.25, E 50.125: 2 * 1.23 / 0.25 = 9.84 -> 9 ticks = 2.25
    # long target 52.375 -> floored 52.25 (other way: 52.50; with 9.84 ticks: 52.585 -> 52.50)
    ("0.25", "long", {"kind": "take_profit", "distance": 2}, ("52.00", "52.25"), ("52.25", "52.50"), tp_at(2)),
    # short target 47.875 -> ceiled 48.00 (other way: 47.75; with 9.84 ticks: 47.665 -> 47.75)
    ("0.25", "short", {"kind": "take_profit", "distance": 2}, ("48.00", "48.25"), ("47.75", "48.00"), tp_at(2)),
])
def test_coarse_ticks_floor_the_distance_and_snap_towards_the_entry(tick_size, side, rule, first, touch, want):
    ticks = quotes(first, touch)
    assert exits(side, [rule], COARSE_FILLS[tick_size, side], ticks, atr=1.23, tick_size=tick_size) == want


def test_a_distance_below_one_tick_is_one_tick():
    rule = {"kind": "stop_loss", "distance": "0.004", "unit": "price"}  # floor(0.4) = 0 -> at least 1 tick
    assert exits("long", [rule], "10.00", quotes(("10.00", "10.01"), ("9.99", "10.00"))) == stop_at(2)


# --- mid: a half-tick mid is compared exactly --------------------------------------------------------------

@pytest.mark.parametrize(("side", "entry", "distance", "half_tick_short", "equal", "half_tick_past"), [
    # long stop 10.01 - 0.05 = 9.96 (9.959999999999999 in floats); mids 9.965, 9.96, 9.955
    ("long", "10.01", 0.05, ("9.96", "9.97"), ("9.95", "9.97"), ("9.95", "9.96")),
    # short stop 169.37 + 0.02 = 169.39 (169.39000000000001 in floats); mids 169.385, 169.39, 169.395
    ("short", "169.37", 0.02, ("169.38", "169.39"), ("169.38", "169.40"), ("169.39", "169.40")),
])
def test_mid_trigger_half_a_tick_away_holds_and_exactly_on_the_level_fires(side, entry, distance, half_tick_short,
                                                                           equal, half_tick_past):
    rule = {"kind": "stop_loss", "distance": distance, "unit": "price", "trigger": "mid"}
    assert exits(side, [rule], entry, quotes(half_tick_short, equal)) == stop_at(2)
    assert exits(side, [rule], entry, quotes(half_tick_short, half_tick_past)) == stop_at(2)
    assert exits(side, [rule], entry, quotes(half_tick_short, half_tick_short)) == {}


# --- thresholds: break-even after, trailing activate_after --------------------------------------------------

@pytest.mark.parametrize(("atr", "threshold"), [
    (3.0, "100.30"),  # 0.1 * 3 = 0.3 is 30 ticks (0.30000000000000004 in floats)
    (2.999, "100.29"),  # 0.2999 is 29.99 ticks -> 29
])
def test_long_break_even_arms_exactly_at_its_threshold(atr, threshold):
    # level: ceil_grid(100.00 + 0.005) = 100.01 (it would be 100.00 snapped the other way)
    rule = {"kind": "break_even", "after": 0.1, "unit": "atr", "offset": "0.005"}

    def run(best: Decimal) -> dict[str, tuple]:
        ticks = quotes((best, "100.31"), ("100.02", "100.03"), ("100.01", "100.02"))
        return exits("long", [rule], "100.00", ticks, atr=atr)

    assert run(Decimal(threshold)) == stop_at(3)
    assert run(Decimal(threshold) - Decimal("0.01")) == {}  # a tick short: never armed


def test_short_break_even_mirror():
    # armed at exactly 0.25 below 50.00; level floor_grid(50.00 - 0.005) = 49.99, which an ask of 49.99 touches
    rule = {"kind": "break_even", "after": "0.25", "unit": "price", "offset": 0.005}
    ticks = quotes(("49.74", "49.75"), ("49.97", "49.98"), ("49.98", "49.99"))
    assert exits("short", [rule], "50.00", ticks) == stop_at(3)


@pytest.mark.parametrize(("atr", "threshold"), [
    (3.0, "100.30"),  # 0.1 * 3 = 0.3 is 30 ticks (0.30000000000000004 in floats); distance 0.15 is 15 ticks
    (2.999, "100.29"),  # 0.2999 is 29.99 ticks -> 29; distance 0.14995 is 14.995 ticks -> 14
])
def test_long_trailing_activates_exactly_at_activate_after(atr, threshold):
    # once active at the threshold, the level is ceil_grid(threshold - distance) = 100.15 in both cases
    rule = {"kind": "trailing_stop", "distance": 0.05, "unit": "atr", "activate_after": 0.1}

    def run(reach: Decimal) -> dict[str, tuple]:
        ticks = quotes(("100.01", "100.02"), ("100.15", "100.16"), (reach, "100.31"), ("100.16", "100.17"),
                       ("100.15", "100.16"))
        return exits("long", [rule], "100.00", ticks, atr=atr)

    assert run(Decimal(threshold)) == stop_at(5)
    assert run(Decimal(threshold) - Decimal("0.01")) == {}  # a tick short: never active, so never a level


def test_short_trailing_activate_after_mirror():
    # active at an ask of exactly 99.70 (0.30 below 100.00); level floor_grid(99.70 + 0.15) = 99.85
    rule = {"kind": "trailing_stop", "distance": 0.05, "unit": "atr", "activate_after": 0.1}
    ticks = quotes(("99.70", "99.71"), ("99.84", "99.85"), ("99.69", "99.70"), ("99.83", "99.84"),
                   ("99.84", "99.85"))
    assert exits("short", [rule], "100.00", ticks, atr=3.0) == stop_at(5)


def test_activate_after_zero_trails_from_the_entry():
    # active from the entry; 0.025 is 2.5 ticks -> 2: the level is 9.98 (9.97 with the ticks rounded up)
    rule = {"kind": "trailing_stop", "distance": "0.025", "unit": "price", "activate_after": 0}
    assert exits("long", [rule], "10.00", quotes(("9.99", "10.00"), ("9.98", "9.99"))) == stop_at(2)


# --- a volatility update re-sizes with the same rounding ----------------------------------------------------

@pytest.mark.parametrize(("new_atr", "allow_loosen", "fires_at"), [
    (0.2555, False, "9.75"),  # 25.55 ticks -> 25: tighter 9.75 replaces 9.67
    (0.5055, False, "9.67"),  # looser 9.50 is refused: 9.67 stays
    (0.5055, True, "9.50"),  # 50.55 ticks -> 50
])
def test_stop_resize_on_volatility_update(new_atr, allow_loosen, fires_at):
    # 0.333 / 0.01 = 33.3 -> 33 ticks: the stop starts at 9.67
    rule = {"kind": "stop_loss", "distance": 1, "unit": "atr", "allow_loosen": allow_loosen}
    price = Decimal(fires_at)
    ticks = quotes(("10.00", "10.01"), (price + Decimal("0.01"), "10.01"), (price, "10.01"))
    got = exits("long", [rule], "10.00", ticks, atr=0.333, updates=((T0 + 1, new_atr, 1.0),))
    assert got == stop_at(3)


def test_target_resize_on_volatility_update_goes_both_ways():
    # short target: 1 ADR; 0.333 -> 33 ticks: 9.67; after the update 0.5055 -> 50 ticks: 9.50 (farther)
    rule = {"kind": "take_profit", "distance": 1, "unit": "adr"}
    ticks = quotes(("9.99", "10.00"), ("9.66", "9.67"), ("9.50", "9.51"), ("9.49", "9.50"))
    got = exits("short", [rule], "10.00", ticks, adr=0.333, updates=((T0 + 1, 1.0, 0.5055),))
    assert got == tp_at(4)
