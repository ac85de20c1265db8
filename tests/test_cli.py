"""The command line as a user runs it (a real subprocess)."""

import json
import subprocess
import sys

TG = [sys.executable, "-m", "tickguard"]


def run(*args, **kw):
    return subprocess.run([*TG, *args], capture_output=True, text=True, timeout=240, **kw)


def test_sim_runs_config_trades_and_refuses_bad_ones(tmp_path):
    cfg = tmp_path / "trades.toml"
    cfg.write_text("""
[sim]
symbols = 2
[[trades]]
symbol = "SIM001"
side = "short"
qty = 200
rules = [{kind = "stop_loss", distance = 0.3}, {kind = "take_profit", distance = 0.3}]
[[trades]]
symbol = "NOPE"
side = "long"
qty = 1
rules = [{kind = "stop_loss", distance = 1}]
""")
    out = tmp_path / "r.json"
    done = run("sim", "--config", str(cfg), "--duration", "900", "--speed", "0", "--no-live", "--report", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [t["symbol"] for t in report["trades"]] == ["SIM001"]
    assert report["trades"][0]["state"] == "closed"
    [refused] = report["summary"]["rejected_requests"]
    assert refused["symbol"] == "NOPE" and "unknown symbol" in refused["reason"]
    assert "refused trade" in done.stdout and report["meta"]["failed_symbols"] == ["NOPE"]


def test_broken_config_exits_2_naming_the_field(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[sim]\nsymbols = 0\n")
    done = run("sim", "--config", str(cfg), "--no-live")
    assert done.returncode == 2
    assert "sim.symbols: Input should be greater than or equal to 1" in done.stderr


def test_config_command_prints_effective_settings():
    done = run("config", env={"TICKGUARD_SIM__SEED": "99", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sim"]["seed"] == 99
