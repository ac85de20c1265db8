import datetime as dt

import pytest
from pydantic import TypeAdapter, ValidationError

from tickguard.core.exit_rules import (
    BreakEven,
    ExitRule,
    StopLoss,
    TakeProfit,
    TimeStop,
    TrailingStop,
    break_even_x,
    stop_x,
    target_x,
    trail_x,
)

ATR, ADR = 2.0, 3.0


@pytest.mark.parametrize(("sign", "expected"), [(1, 97.0), (-1, 103.0)])
def test_stop_in_atr_from_entry(sign, expected):
    level = stop_x(StopLoss(distance=1.5), sign, 100.0, ATR, ADR)
    assert sign * level == pytest.approx(expected)


@pytest.mark.parametrize(("sign", "expected"), [(1, 97.0), (-1, 103.0)])
def test_stop_in_adr_from_entry(sign, expected):
    assert sign * stop_x(StopLoss(distance=1.0, unit="adr"), sign, 100.0, ATR, ADR) == pytest.approx(expected)


def test_fixed_price_stop_ignores_volatility():
    assert stop_x(StopLoss(price=95.0), 1, 100.0, ATR, ADR) == 95.0
    assert -stop_x(StopLoss(price=105.0), -1, 100.0, ATR, ADR) == 105.0


@pytest.mark.parametrize(("sign", "expected"), [(1, 104.0), (-1, 96.0)])
def test_target_in_atr(sign, expected):
    assert sign * target_x(TakeProfit(distance=2.0), sign, 100.0, ATR, ADR) == pytest.approx(expected)


def test_target_price_units():
    assert target_x(TakeProfit(distance=0.5, unit="price"), 1, 100.0, ATR, ADR) == pytest.approx(100.5)


@pytest.mark.parametrize("sign", [1, -1])
def test_trailing_follows_best_and_activation(sign):
    rule = TrailingStop(distance=1.0, activate_after=0.5)
    entry = 100.0
    # not yet 0.5 ATR (= 1.0) in profit: inactive
    assert trail_x(rule, sign, entry, sign * (entry + sign * 0.9), ATR, ADR) is None
    best = sign * (entry + sign * 1.5)
    level = trail_x(rule, sign, entry, best, ATR, ADR)
    assert level is not None and sign * level == pytest.approx(entry + sign * 1.5 - sign * 2.0)
    assert trail_x(TrailingStop(distance=1.0), sign, entry, sign * entry, ATR, ADR) == pytest.approx(
        sign * entry - 2.0)


@pytest.mark.parametrize("sign", [1, -1])
def test_break_even_arms_after_profit(sign):
    rule = BreakEven(after=1.0, offset=0.1)
    entry = 50.0
    assert break_even_x(rule, sign, entry, sign * (entry + sign * 1.99), ATR, ADR) is None
    level = break_even_x(rule, sign, entry, sign * (entry + sign * 2.0), ATR, ADR)
    assert level is not None and sign * level == pytest.approx(entry + sign * 0.1)


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
