"""Snapping prices onto the tick grid, exactly (core.price_grid).

Why these cases: IB refuses an off-grid price (error 110) judged on the text ib_async sends, ``str(float)``.
So a snapped price must not only be near the grid, its ``str`` must be the grid price's text; and the
direction must keep an exit marketable (sell down, buy up).
"""

from decimal import Decimal

import pytest

from tickguard.core.price_grid import Rounding, exact, marketable_limit, on_grid, snap

DOWN, UP = Rounding.DOWN, Rounding.UP


def wire_ok(price: float, tick: float) -> bool:
    """What the gateway checks: the client's text for the float, as a Decimal, divisible by the tick."""
    return Decimal(str(price)) % Decimal(str(tick)) == 0


@pytest.mark.parametrize(
    ("price", "tick", "down", "up"),
    [
        (100.003, 0.01, 100.0, 100.01),
        (100.01, 0.01, 100.01, 100.01),  # on the grid: unchanged both ways
        (99.997, 0.01, 99.99, 100.0),
        (100.12, 0.05, 100.1, 100.15),
        (100.15, 0.05, 100.15, 100.15),
        (100.10, 0.25, 100.0, 100.25),
        (100.375, 0.25, 100.25, 100.5),
        (1.23456, 0.0001, 1.2345, 1.2346),
        (1.2345, 0.0001, 1.2345, 1.2345),
        (600000.005, 0.01, 600000.0, 600000.01),
        (600000.00, 0.01, 600000.0, 600000.0),
        (599999.999, 0.01, 599999.99, 600000.0),
        (0.004, 0.01, 0.0, 0.01),
    ],
)
def test_snap_moves_onto_the_grid_in_the_given_direction(price, tick, down, up):
    assert snap(price, tick, DOWN) == down and snap(price, tick, UP) == up
    for result in (snap(price, tick, DOWN), snap(price, tick, UP)):
        assert on_grid(result, tick) and wire_ok(result, tick)
    assert snap(price, tick, DOWN) <= price <= snap(price, tick, UP)


def test_awkward_floats_are_judged_by_their_shortest_text():
    noisy = 169.37 + 0.02
    assert str(noisy) == "169.39000000000001" and not on_grid(noisy, 0.01)  # what IB would refuse
    assert snap(noisy, 0.01, DOWN) == 169.39 and str(snap(noisy, 0.01, DOWN)) == "169.39"
    assert snap(noisy, 0.01, UP) == 169.4  # exact: that float is above 169.39
    third = 0.1 + 0.2
    assert str(third) == "0.30000000000000004" and not on_grid(third, 0.1) and not on_grid(third, 0.01)
    assert str(snap(third, 0.01, DOWN)) == "0.3" and str(snap(third, 0.1, DOWN)) == "0.3"
    assert snap(third, 0.01, UP) == 0.31
    # 169.39000000000001 is the double one step above 169.39 (the same as 169.37 + 0.02): off the grid
    above = 169.39000000000001
    assert above == noisy and above != 169.39 and not on_grid(above, 0.01)
    assert (snap(above, 0.01, DOWN), snap(above, 0.01, UP)) == (169.39, 169.4)
    # 169.38999999999999 is written with noise but is the double 169.39 itself: its shortest text is "169.39"
    same = 169.38999999999999
    assert same == 169.39 and str(same) == "169.39" and on_grid(same, 0.01)
    assert snap(same, 0.01, DOWN) == snap(same, 0.01, UP) == 169.39
    # exactness cuts both ways: a double just below the grid price goes a whole tick down when selling,
    # which is why marketable_limit does its arithmetic in Decimal instead of snapping a float difference
    below = 169.38999999999996
    assert (snap(below, 0.01, DOWN), snap(below, 0.01, UP)) == (169.38, 169.39)


def test_float_grid_arithmetic_would_have_failed_where_decimal_does_not():
    # the float way, round(x / tick) * tick, leaves noise IB refuses; the Decimal way does not
    assert not wire_ok(round(0.3 / 0.1) * 0.1, 0.1)  # 0.30000000000000004
    assert wire_ok(snap(0.3, 0.1, DOWN), 0.1) and wire_ok(snap(0.3, 0.1, UP), 0.1)
    assert not wire_ok(169.37 + 0.02, 0.01) and wire_ok(marketable_limit(169.37, 0.02, 0.01, buy=True), 0.01)


@pytest.mark.parametrize(
    ("touch", "offset", "tick", "buy", "expected"),
    [
        (169.41, 0.02, 0.01, False, 169.39),  # sell: touch minus offset, already on the grid
        (169.37, 0.02, 0.01, True, 169.39),  # buy: 169.37 + 0.02 is 169.39 in Decimal, not 169.40
        (100.0, 0.003, 0.01, False, 99.99),  # off-grid offset: a sell rounds down (more aggressive)
        (100.0, 0.003, 0.01, True, 100.01),  # a buy rounds up
        (100.25, 0.1, 0.25, False, 100.0),
        (100.25, 0.1, 0.25, True, 100.5),
        (100.10, 0.0, 0.05, False, 100.1),
        (1.2345, 0.00005, 0.0001, False, 1.2344),
        (600000.00, 0.005, 0.01, True, 600000.01),
        (600000.00, 0.0, 0.01, False, 600000.0),
    ],
)
def test_marketable_limit_is_never_less_aggressive_than_the_offset(touch, offset, tick, buy, expected):
    limit = marketable_limit(touch, offset, tick, buy)
    assert limit == expected and wire_ok(limit, tick)
    wanted = exact(touch) + exact(offset) if buy else exact(touch) - exact(offset)
    assert (exact(limit) >= wanted) if buy else (exact(limit) <= wanted)
    assert abs(exact(limit) - wanted) < exact(tick)  # and at most one tick beyond it


@pytest.mark.parametrize(
    ("price", "tick", "expected"),
    [
        (100.0, 0.01, True),
        (100.005, 0.01, False),
        (100.25, 0.25, True),
        (100.1, 0.25, False),
        (1.2345, 0.0001, True),
        (1.23451, 0.0001, False),
        (600000.0, 0.01, True),
        (600000.001, 0.01, False),
        (0.15, 0.05, True),
        (0.16, 0.05, False),
        (float("nan"), 0.01, False),
        (float("inf"), 0.01, False),
    ],
)
def test_on_grid(price, tick, expected):
    assert on_grid(price, tick) is expected


@pytest.mark.parametrize("tick", [0.0, -0.01, float("nan")])
def test_a_tick_must_be_positive(tick):
    with pytest.raises(ValueError, match="tick must be a positive number"):
        snap(1.0, tick, DOWN)


def test_a_price_must_be_finite():
    with pytest.raises(ValueError, match="price must be finite"):
        snap(float("nan"), 0.01, UP)
