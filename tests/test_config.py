from pathlib import Path

import pytest

from tickguard.config import ConfigError, Settings, load
from tickguard.core.exit_rules import StopLoss, TakeProfit


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tickguard.toml"
    p.write_text(text)
    return p


def test_defaults_are_valid_and_documented():
    s = load()
    assert s.sim.seed == 7 and s.engine.max_order_attempts == 5 and s.volatility.atr_period == 14
    for section in (s.engine, s.volatility, s.sim, s.sim.market, s.sim.exchange):
        for name, field in type(section).model_fields.items():
            if name not in ("market", "exchange"):
                assert field.description, f"{type(section).__name__}.{name} has no documentation"


def test_toml_file_with_trades(tmp_path):
    path = write(tmp_path, """
[sim]
seed = 3
symbols = 2
[[trades]]
symbol = "sim001"
side = "long"
qty = 100
rules = [{kind = "stop_loss", distance = 1.5},
         {kind = "take_profit", fraction = 0.5, distance = 2},
         {kind = "take_profit", fraction = 0.5, distance = 4}]
""")
    s = load(path)
    assert s.sim.seed == 3 and s.trades[0].symbol == "SIM001"
    assert isinstance(s.trades[0].rules[0], StopLoss) and isinstance(s.trades[0].rules[2], TakeProfit)


def test_bad_config_names_every_field(tmp_path):
    path = write(tmp_path, """
[engine]
max_order_attempts = 0
[sim]
speed = -1
surprise = true
""")
    with pytest.raises(ConfigError) as err:
        load(path)
    msg = str(err.value)
    assert "engine.max_order_attempts: Input should be greater than or equal to 1 (got 0)" in msg
    assert "sim.speed: Input should be greater than or equal to 0" in msg
    assert "sim.surprise: Extra inputs are not permitted" in msg


def test_bad_trade_in_config_is_refused_with_reason(tmp_path):
    path = write(tmp_path, """
[[trades]]
symbol = "SIM001"
side = "long"
qty = 10
rules = [{kind = "stop_loss", distance = 1}, {kind = "take_profit", fraction = 0.5, distance = 2}]
""")
    with pytest.raises(ConfigError, match="take_profit fractions must sum to 1, they sum to 0.5"):
        load(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[sim\nseed = 1"))


def test_environment_overrides_file_and_overrides_win(tmp_path, monkeypatch):
    path = write(tmp_path, "[sim]\nseed = 3\nsymbols = 9\n")
    monkeypatch.setenv("TICKGUARD_SIM__SEED", "42")
    s = load(path)
    assert (s.sim.seed, s.sim.symbols) == (42, 9)
    assert load(path, {"sim": {"seed": 5}}).sim.seed == 5
    monkeypatch.setenv("TICKGUARD_ENGINE__MAX_ORDER_ATTEMPTS", "zero")
    with pytest.raises(ConfigError, match="engine.max_order_attempts"):
        load(path)


def test_settings_type():
    assert isinstance(load(), Settings)


@pytest.mark.parametrize("url", ["postgres://u:pw@h/db", "postgresql://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"])
def test_a_postgres_url_as_users_write_it_uses_the_shipped_driver(url):
    assert load(None, {"journal": {"url": url}}).journal.target == "postgresql+psycopg://u:pw@h/db"


@pytest.mark.parametrize(("url", "why"), [("mysql://u@h/db", "scheme 'mysql' is not supported"),
                                          ("just-a-name", "is not a database URL")])
def test_an_unusable_database_url_is_refused_by_name(url, why):
    with pytest.raises(ConfigError, match=why):
        load(None, {"journal": {"url": url}})


def test_the_config_command_never_prints_a_database_password():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tickguard", "config"], capture_output=True, text=True, timeout=60,
                          env={"TICKGUARD_JOURNAL__URL": "postgres://alice:s3cret@db.example/tg", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout and "postgresql+psycopg://alice:***@db.example/tg" in done.stdout
