"""Exit rules: their specs, and the level arithmetic on the tick grid with the one rounding rule.

The rule (README, "Prices and rounding"): a distance from volatility is whole ticks, rounded down, at least one;
a level goes onto the grid towards the entry - a stop tighter, a target nearer.  Every expected value here is a
hand-computed exact price; a float or the other rounding direction fails them."""

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from pydantic import TypeAdapter, ValidationError

from tickguard.core.exit_rules import (
    BreakEven,
    ExitRule,
    StopLoss,
    TakeProfit,
    TimeStop,
    TrailingStop,
    rule_distance,
    stop_motion,
    stop_x,
    target_x,
)
from tickguard.core.price_grid import CENT, PriceGrid
from tickguard.core.volatility import VolSnapshot

VOL = VolSnapshot("AAA", 2.0, 3.0, 0)  # ATR 2.0, ADR 3.0


def entry(price: str, sign: int, grid: PriceGrid = CENT) -> Fraction:
    return sign * grid.fraction(Decimal(price))


def price(units: int | None, sign: int, grid: PriceGrid = CENT) -> Decimal | None:
    return None if units is None else grid.price(sign * units)


@pytest.mark.parametrize(("sign", "expected"), [(1, "97.00"), (-1, "103.00")])
def test_stop_in_atr_from_entry(sign, expected):
    assert price(stop_x(StopLoss(distance=1.5), sign, entry("100", sign), VOL, CENT), sign) == Decimal(expected)


@pytest.mark.parametrize(("sign", "expected"), [(1, "97.00"), (-1, "103.00")])
def test_stop_in_adr_from_entry(sign, expected):
    level = stop_x(StopLoss(distance=1.0, unit="adr"), sign, entry("100", sign), VOL, CENT)
    assert price(level, sign) == Decimal(expected)


def test_fixed_price_stop_ignores_volatility_and_must_be_on_the_grid():
    assert price(stop_x(StopLoss(price=95.0), 1, entry("100", 1), VOL, CENT), 1) == Decimal("95.00")
    assert price(stop_x(StopLoss(price=105.0), -1, entry("100", -1), VOL, CENT), -1) == Decimal("105.00")
    with pytest.raises(ValueError, match="not a whole multiple of the minimum tick 0.01"):
        stop_x(StopLoss(price=95.005), 1, entry("100", 1), VOL, CENT)


@pytest.mark.parametrize(("sign", "expected"), [(1, "104.00"), (-1, "96.00")])
def test_target_in_atr(sign, expected):
    assert price(target_x(TakeProfit(distance=2.0), sign, entry("100", sign), VOL, CENT), sign) == Decimal(expected)


def test_target_price_units():
    level = target_x(TakeProfit(distance=0.5, unit="price"), 1, entry("100", 1), VOL, CENT)
    assert price(level, 1) == Decimal("100.50")


@pytest.mark.parametrize(
    ("value", "unit", "atr", "tick", "ticks"),
    [
        (1.0, "atr", 0.123, "0.05", 2),  # 0.123 / 0.05 = 2.46 ticks: rounded down
        (0.3, "price", 2.0, "0.1", 3),  # 0.3 / 0.1 is 2.9999999999999996 in floats; exactly 3 here
        (1.0, "atr", 0.004, "0.01", 1),  # less than a tick: at least one
        (2.5, "atr", 0.3, "0.25", 3),  # 0.75 / 0.25
        (1.0, "atr", 0.00037, "0.0001", 3),
        (0.5, "atr", 2345.67, "0.01", 117283),  # 1172.835 -> 1172.83
    ],
)
def test_a_distance_is_whole_ticks_rounded_down_at_least_one(value, unit, atr, tick, ticks):
    vol = VolSnapshot("X", atr, atr, 0)
    assert rule_distance(value, unit, vol, PriceGrid(tick)) == 2 * ticks


@pytest.mark.parametrize(
    ("sign", "entry_price", "tick", "stop", "target"),
    [
        # an average entry off the grid: a stop goes tighter (towards the entry), a target nearer
        (1, "100.004", "0.01", "96.01", "104.00"),
        (-1, "100.004", "0.01", "104.00", "96.01"),
        (1, "100.10", "0.25", "96.25", "104.00"),
        (-1, "100.10", "0.25", "104.00", "96.25"),
    ],
)
def test_levels_round_towards_the_entry(sign, entry_price, tick, stop, target):
    grid = PriceGrid(tick)
    ex = entry(entry_price, sign, grid)
    assert price(stop_x(StopLoss(distance=2.0), sign, ex, VOL, grid), sign, grid) == Decimal(stop)
    assert price(target_x(TakeProfit(distance=2.0), sign, ex, VOL, grid), sign, grid) == Decimal(target)


@pytest.mark.parametrize(("sign", "almost", "active", "level", "later", "later_level"),
                         [(1, "100.99", "101.00", "99.00", "101.50", "99.50"),
                          (-1, "99.01", "99.00", "101.00", "98.50", "100.50")])
def test_trailing_follows_best_and_activation(sign, almost, active, level, later, later_level):
    motion = stop_motion(TrailingStop(distance=1.0, activate_after=0.5), None, entry("100", sign), VOL, CENT)
    assert motion.trail_d == 400  # 1 ATR = 2.00 = 200 ticks = 400 units
    # 0.5 ATR (= 1.00) in profit activates it, exactly at the threshold and not a tick before
    assert motion.trail_level(int(entry(almost, sign))) is None
    assert price(motion.trail_level(int(entry(active, sign))), sign) == Decimal(level)
    assert price(motion.trail_level(int(entry(later, sign))), sign) == Decimal(later_level)


def test_trailing_level_lands_exactly_where_floats_do_not():
    # 169.41 - 0.02 is 169.39 here; in floats 169.37 + 0.02 = 169.39000000000001 missed an ask at 169.39
    motion = stop_motion(TrailingStop(distance=0.02, unit="price"), None, entry("169.00", -1), VOL, CENT)
    assert price(motion.trail_level(int(entry("169.37", -1))), -1) == Decimal("169.39")
    long = stop_motion(TrailingStop(distance=0.02, unit="price"), None, entry("169.00", 1), VOL, CENT)
    assert price(long.trail_level(int(entry("169.41", 1))), 1) == Decimal("169.39")


def test_a_mid_best_on_a_half_tick_trails_onto_the_grid_tighter():
    motion = stop_motion(TrailingStop(distance=0.02, unit="price"), None, entry("100", 1), VOL, CENT)
    best = int(entry("100.305", 1))  # a mid between 100.30 and 100.31
    assert price(motion.trail_level(best), 1) == Decimal("100.29")  # 100.285 rounded up: tighter


@pytest.mark.parametrize(("sign", "almost", "armed", "level"), [(1, "51.99", "52.00", "50.10"),
                                                                (-1, "48.01", "48.00", "49.90")])
def test_break_even_arms_after_profit(sign, almost, armed, level):
    motion = stop_motion(None, BreakEven(after=1.0, offset=0.1), entry("50", sign), VOL, CENT)
    assert motion.break_even(int(entry(almost, sign))) is None
    assert price(motion.break_even(int(entry(armed, sign))), sign) == Decimal(level)  # exactly 1 ATR: armed


def test_time_stop_after_duration():
    assert TimeStop(after_seconds=90).deadline_ns(1_000) == 1_000 + 90 * 10**9


def test_time_stop_at_exchange_clock_time_same_day_and_next_day():
    rule = TimeStop(at=dt.time(15, 55))
    ny = dt.timezone(dt.timedelta(hours=-5))  # November: New York is UTC-5
    morning = int(dt.datetime(2026, 11, 23, 10, 0, tzinfo=ny).timestamp() * 1e9)
    expected = int(dt.datetime(2026, 11, 23, 15, 55, tzinfo=ny).timestamp() * 1e9)
    assert rule.deadline_ns(morning) == expected
    late = int(dt.datetime(2026, 11, 23, 16, 30, tzinfo=ny).timestamp() * 1e9)
    assert rule.deadline_ns(late) == expected + 24 * 3600 * 10**9


def test_rule_specs_validate():
    with pytest.raises(ValidationError, match="exactly one of 'price' or 'distance'"):
        StopLoss()
    with pytest.raises(ValidationError, match="exactly one of 'price' or 'distance'"):
        TakeProfit(price=1.0, distance=1.0)
    with pytest.raises(ValidationError, match="greater than 0"):
        TrailingStop(distance=-1)
    with pytest.raises(ValidationError, match="unknown time zone"):
        TimeStop(at=dt.time(15, 55), tz="Mars/Olympus")
    with pytest.raises(ValidationError, match="exactly one of 'after_seconds' or 'at'"):
        TimeStop()
    with pytest.raises(ValidationError, match="offset must be smaller"):
        BreakEven(after=1.0, unit="price", offset=1.0)


def test_rules_parse_from_plain_dicts_by_kind():
    adapter = TypeAdapter(list[ExitRule])
    rules = adapter.validate_python([{"kind": "stop_loss", "distance": 1.5},
                                     {"kind": "time_stop", "at": "15:55"}])
    assert isinstance(rules[0], StopLoss) and isinstance(rules[1], TimeStop)
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        adapter.validate_python([{"kind": "moon_stop"}])
