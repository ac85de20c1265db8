"""The command line as a user runs it (a real subprocess)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TG = [sys.executable, "-m", "tickguard"]


def run(*args, timeout: float = 240, **kw):
    return subprocess.run([*TG, *args], capture_output=True, text=True, timeout=timeout, **kw)


@contextlib.contextmanager
def fake_gateway(symbols: str):
    """``tickguard fake-gateway`` in its own process on a free port (yielded), stopped afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # its output to a file, not a pipe nobody reads (which fills and then blocks the gateway on a log line)
    with tempfile.NamedTemporaryFile("w+", prefix="fake-gateway-", suffix=".log") as log:
        gateway = subprocess.Popen([*TG, "fake-gateway", "--port", str(port), "--symbols", symbols, "--speed", "5"],
                                   stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30
            while "listening on 127.0.0.1:" not in Path(log.name).read_text():
                assert gateway.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
                time.sleep(0.05)
            yield port
        finally:
            gateway.terminate()
            gateway.wait(10)


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


def test_run_against_the_fake_gateway_reports_what_it_cannot_trade(tmp_path):
    with fake_gateway("AAA,BBB") as port:
        cfg = tmp_path / "run.toml"
        cfg.write_text(f"""
[ib]
port = {port}
client_id = 5
account = "DU0000001"
symbols = ["NOPE"]
[journal]
path = "{tmp_path / 'j.db'}"
[engine]
busy_poll_us = 500
[[trades]]
ref = "t1"
symbol = "AAA"
side = "long"
qty = 100
account = "DU0000001"
rules = [{{kind = "stop_loss", distance = 1.0}}, {{kind = "time_stop", after_seconds = 1}}]
""")
        done = run("run", "--config", str(cfg), "--duration", "4", "--no-live")
        assert done.returncode == 0, done.stdout + done.stderr
        # the events are in the log (stderr), once each; the table is on stdout
        assert "NOT READY" in done.stderr and "NOPE" in done.stderr and "no security definition" in done.stderr
        assert "trade T00001 accepted: long 100 AAA" in done.stderr and "T00001" in done.stdout
        if len(os.sched_getaffinity(0)) >= 2:  # [engine] busy_poll_us: the loop it ran on (runtime/busy_poll.py)
            assert "polls its sockets for up to 500 us once idle after a socket event" in done.stderr
        assert_one_line_per_event(done.stderr)
        # a restart re-opens nothing; its log as JSON, one object per line, ib_async's included at DEBUG
        again = run("run", "--config", str(cfg), "--duration", "1", "--no-live", "--log-format", "json",
                    "--log-level", "WARNING", "--log-level", "ib_async=DEBUG", "--log-level", "runtime.engine=INFO")
        records = [json.loads(line) for line in again.stderr.splitlines()]
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
        assert any(r["logger"] == "tickguard.runtime.engine" and r["message"].startswith("recovered")
                   for r in records)
        assert any(r["logger"].startswith("ib_async") and r["level"] == "DEBUG" for r in records)
        assert not any(r["logger"] == "tickguard.interfaces.ib_session" and r["level"] == "INFO" for r in records)
        assert not any("accepted" in r["message"] for r in records)
        listing = run("trades", "--journal", str(tmp_path / "j.db"), "--json")
        [trade] = json.loads(listing.stdout)
        assert trade["state"] == "closed" and trade["close_reason"] == "time_stop"
        assert [o["leg"] for o in trade["orders"]] == ["entry", "time"]
        legs = {leg["name"]: leg for leg in trade["legs"]}
        assert set(legs) == {"stop", "time"} and legs["time"]["fired"] == 1 and legs["time"]["filled"] == "100"
        assert legs["stop"]["fired"] == 0 and legs["stop"]["armed"] is False
        assert [t["trade_id"] for t in json.loads(run("trades", "--journal", str(tmp_path / "j.db"), "--json",
                                                       "--state", "open").stdout)] == []


def assert_one_line_per_event(log: str) -> None:
    """No event logged twice: ib_async's copy of an IB message is dropped, the start-up report is only logged."""
    messages = [line.split(" ", 3)[3] for line in log.splitlines() if line[:4].isdigit()]
    assert messages and len(messages) == len(set(messages)), messages
    assert not any(m.startswith("ERROR ib_async") or "Error 2104" in m for m in messages)


def test_a_second_sim_on_the_same_journal_runs(tmp_path):
    """Each sim run's exchange numbers its executions from 1 again: the journal takes an exec id it already has as
    a replay (logged), never as an error - the second run used to die on ``UNIQUE constraint failed``."""
    journal = tmp_path / "j.db"
    args = ("sim", "--journal", str(journal), "--duration", "900", "--speed", "0", "--no-live", "--seed", "3")
    first = run(*args)
    assert first.returncode == 0, first.stderr
    second = run(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "IntegrityError" not in second.stderr and "already journaled" in second.stderr
    done = run("trades", "--journal", str(journal), "--json")
    keys = {o["order_key"].split(":")[1] for t in json.loads(done.stdout) for o in t["orders"]}
    assert len(keys) == 1  # one journal, one id in every key


def test_run_without_a_journal_is_refused_with_how_to_fix_it(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[ib]\nport = 1\naccount = "DU0000001"\n')
    done = run("run", "--config", str(cfg), "--duration", "1", "--no-live")
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout
    assert "tickguard run needs a journal" in done.stderr and "[journal]" in done.stderr  # brackets printed as such


def test_a_journal_serves_live_or_simulated_trades_never_both(tmp_path):
    from tickguard.store.journal import Journal

    sim_journal = tmp_path / "sim.db"
    first = run("sim", "--journal", str(sim_journal), "--duration", "60", "--speed", "0", "--no-live")
    assert first.returncode == 0, first.stderr
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[ib]\nport = 1\naccount = "DU0000001"\nconnect_attempts = 1\n[journal]\npath = "{sim_journal}"\n')
    live = run("run", "--config", str(cfg), "--duration", "1", "--no-live")
    assert live.returncode != 0 and "Traceback" not in live.stderr + live.stdout
    assert "holds simulated trades (written by tickguard sim); tickguard run refuses it" in live.stderr
    live_journal = tmp_path / "live.db"
    Journal.open(str(live_journal)).claim("live")  # as `tickguard run` leaves it
    sim = run("sim", "--journal", str(live_journal), "--duration", "60", "--speed", "0", "--no-live")
    assert sim.returncode != 0 and "Traceback" not in sim.stderr + sim.stdout
    assert "holds live trades (written by tickguard run); tickguard sim refuses it" in sim.stderr



def _trades_in(journal) -> int:
    import sqlite3

    if not journal.exists():
        return 0
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        conn.close()


def _until_trades(journal, proc, timeout: float = 60.0) -> None:
    """Poll (with a deadline) until the engine journaled a trade: it has started and handles signals."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and _trades_in(journal) == 0:
        time.sleep(0.05)
    assert proc.poll() is None and _trades_in(journal) > 0


def test_ctrl_c_in_sim_still_prints_the_summary_and_writes_the_report(tmp_path):
    import signal

    out, report, journal = tmp_path / "out.txt", tmp_path / "r.json", tmp_path / "sim.db"
    proc = subprocess.Popen([*TG, "sim", "--duration", "100000", "--speed", "500", "--no-live", "--report",
                             str(report), "--journal", str(journal)], stdout=out.open("w"), stderr=subprocess.STDOUT)
    _until_trades(journal, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, out.read_text()[-2000:]
    text = out.read_text()
    assert "Traceback" not in text and "stopped early at" in text and "tickguard sim - summary" in text
    meta = json.loads(report.read_text())["meta"]
    assert meta["stopped_early_ns"] is not None and meta["stopped_early_ns"] < meta["end_ns"]


def test_stopping_run_lists_the_unguarded_trades_and_journals_the_stop(tmp_path):
    import signal

    from tickguard.store.journal import Journal

    journal = tmp_path / "live.db"
    out = tmp_path / "out.txt"
    with fake_gateway("AAA") as port:
        cfg = tmp_path / "run.toml"
        cfg.write_text(f"""
[ib]
port = {port}
client_id = 6
account = "DU0000001"
[journal]
path = "{journal}"
[[trades]]
ref = "held"
symbol = "AAA"
side = "long"
qty = 100
account = "DU0000001"
rules = [{{kind = "stop_loss", distance = 50.0}}]
""")
        proc = subprocess.Popen([*TG, "run", "--config", str(cfg), "--no-live"], stdout=out.open("w"),
                                stderr=subprocess.STDOUT)
        _until_trades(journal, proc)
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the entry has filled: the trade is open
            j = Journal.open(str(journal), create=False)
            state = j.list_trades()[0]["state"]
            j.close()
            if state == "open":
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, out.read_text()[-2000:]
    text = out.read_text()
    assert "Traceback" not in text and "1 trade(s) open and no longer watched" in text
    assert "UNGUARDED T00001 long 100 AAA" in text and "NOTHING at the broker protects it" in text
    import sqlite3

    conn = sqlite3.connect(journal)
    rows = conn.execute("SELECT data FROM events WHERE kind = 'engine_stopped'").fetchall()
    conn.close()
    assert len(rows) == 1 and json.loads(rows[0][0])["unguarded"] == ["T00001"]  # the journal records the stop


def test_the_fake_gateway_writes_its_pacing_report_when_terminated(tmp_path):
    """``--pacing-report``: what each client sent, as the gateway counted it, readable by a test after SIGTERM."""
    import asyncio

    from ib_async import IB

    report = tmp_path / "pacing.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "gateway.log"
    gateway = subprocess.Popen([*TG, "fake-gateway", "--port", str(port), "--symbols", "AAA", "--pacing-report",
                                str(report)], stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():
            assert gateway.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

        async def talk() -> None:
            ib = IB()
            await ib.connectAsync("127.0.0.1", port, clientId=3, timeout=10)
            ib.disconnect()

        asyncio.run(talk())
    finally:
        gateway.terminate()
        assert gateway.wait(20) == 0, log.read_text()
    counted = json.loads(report.read_text())["3"]
    assert counted["received"] >= 2 and counted["refused"] == 0 and counted["violations"] == 0
    assert 1 <= counted["max_in_window"] <= counted["received"]
