"""The price grid (core.price_grid): prices to and from the core's integer units, exactly.

Why these cases: a float from the feed carries noise (``169.39000000000001``) that must not move a price off its
tick; IB judges a limit by the text ib_async sends (``str(float)``, error 110), so a price leaving the core must be
the grid price's own text; and the rounding directions decide whether a stop fires a tick early or late.
"""

import math
from decimal import Decimal
from fractions import Fraction

import pytest

from tickguard.core.price_grid import CENT, NO_PRICE, PriceGrid


def wire_ok(price: Decimal, tick: str) -> bool:
    """What the gateway checks: the client's text for the float, as a Decimal, divisible by the tick."""
    return Decimal(str(float(price))) % Decimal(tick) == 0


@pytest.mark.parametrize(
    ("feed", "tick", "price"),
    [
        (169.39000000000001, "0.01", "169.39"),  # the double above 169.39 (169.37 + 0.02)
        (169.38999999999999, "0.01", "169.39"),  # written with noise below: the same double as 169.39
        (169.37 + 0.02, "0.01", "169.39"),
        (0.1 + 0.2, "0.01", "0.30"),
        (0.1 + 0.2, "0.1", "0.3"),
        (1.23456, "0.00005", "1.23455"),  # FX, 5 decimals: 1.23456 is nearest 1.23455
        (1.2345, "0.0001", "1.2345"),
        (600000.00, "0.01", "600000.00"),  # BRK.A-like
        (600000.004, "0.01", "600000.00"),
        (100.12, "0.05", "100.10"),
        (100.13, "0.05", "100.15"),
        (100.375, "0.25", "100.50"),  # halfway: to even ticks (round), and the grid says which
        (100.30, "0.25", "100.25"),
    ],
)
def test_feed_prices_land_on_the_nearest_tick(feed, tick, price):
    grid = PriceGrid(tick)
    units = grid.units(feed)
    assert units % 2 == 0 and grid.price(units) == Decimal(price) and str(grid.price(units)) == price


@pytest.mark.parametrize("marker", [None, math.nan, -1.0, 0.0, -0.0, math.inf, -math.inf, 1.7976931348623157e308])
def test_no_price_markers_never_become_a_price(marker):
    assert CENT.units(marker) == NO_PRICE


def test_a_price_that_rounds_below_one_tick_is_no_price():
    assert CENT.units(0.004) == NO_PRICE  # refused downstream as a non-positive bid or ask


@pytest.mark.parametrize(
    ("price", "tick", "expected"),
    [
        (100.0, "0.01", True),
        (100.005, "0.01", False),
        (100.25, "0.25", True),
        (100.1, "0.25", False),
        (1.2345, "0.0001", True),
        (1.23451, "0.0001", False),
        (600000.0, "0.01", True),
        (600000.001, "0.01", False),
        (0.15, "0.05", True),
        (0.16, "0.05", False),
        (169.37 + 0.02, "0.01", False),  # a user's float noise is refused, not moved
        (math.nan, "0.01", False),
        (math.inf, "0.01", False),
    ],
)
def test_on_grid(price, tick, expected):
    assert PriceGrid(tick).on_grid(price) is expected


def test_exact_units_refuses_an_off_grid_price():
    assert PriceGrid("0.25").exact_units(100.25) == 802
    with pytest.raises(ValueError, match="100.1 is not a whole multiple of the minimum tick 0.25"):
        PriceGrid("0.25").exact_units(100.1)


def test_a_mid_is_a_half_tick_written_exactly():
    assert CENT.price((CENT.units(100.30) + CENT.units(100.31)) >> 1) == Decimal("100.305")


@pytest.mark.parametrize(("x", "up", "down"), [(Fraction(7, 2), 4, 2), (4, 4, 4), (5, 6, 4), (-5, -4, -6),
                                               (Fraction(-1, 3), 0, -2), (0, 0, 0)])
def test_up_and_down_go_to_the_nearest_grid_level(x, up, down):
    assert PriceGrid.up(x) == up and PriceGrid.down(x) == down


@pytest.mark.parametrize(
    ("touch", "offset", "tick", "buy", "expected"),
    [
        ("169.41", "0.02", "0.01", False, "169.39"),  # sell: touch minus offset, already on the grid
        ("169.37", "0.02", "0.01", True, "169.39"),  # buy: exactly 169.39, not 169.40
        ("100.00", "0.003", "0.01", False, "99.99"),  # off-grid offset: a sell rounds down (more aggressive)
        ("100.00", "0.003", "0.01", True, "100.01"),  # a buy rounds up
        ("100.25", "0.1", "0.25", False, "100.00"),
        ("100.25", "0.1", "0.25", True, "100.50"),
        ("100.10", "0", "0.05", False, "100.10"),
        ("1.2345", "0.00005", "0.0001", False, "1.2344"),
        ("600000.00", "0.005", "0.01", True, "600000.01"),
    ],
)
def test_marketable_limit_is_never_less_aggressive_than_the_offset(touch, offset, tick, buy, expected):
    grid = PriceGrid(tick)
    limit = grid.price(grid.marketable_limit(grid.exact_units(touch), Decimal(offset), buy))
    assert limit == Decimal(expected) and str(limit) == expected and wire_ok(limit, tick)
    wanted = Decimal(touch) + Decimal(offset) if buy else Decimal(touch) - Decimal(offset)
    assert (limit >= wanted) if buy else (limit <= wanted)
    assert abs(limit - wanted) < Decimal(tick)  # and at most one tick beyond it


@pytest.mark.parametrize("tick", [0.0, -0.01, math.nan, "abc"])
def test_a_tick_must_be_positive(tick):
    with pytest.raises((ValueError, ArithmeticError)):
        PriceGrid(tick)


def test_distance_is_whole_ticks_down_with_a_minimum():
    assert CENT.distance(Decimal("0.029")) == 4 and CENT.distance(Decimal("0.001")) == 2
    assert CENT.distance(Decimal("0"), minimum=0) == 0
    with pytest.raises(ValueError, match="cannot be negative"):
        CENT.distance(Decimal("-0.01"))
