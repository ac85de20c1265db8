"""``tickguard doctor`` as a user runs it (a real subprocess), against the fake gateway in its own process."""

from __future__ import annotations

import asyncio
import json
import re
import socket

from ib_async import IB
from test_cli import fake_gateway, run

from tickguard.store.journal import Journal


def config(port: int, journal: str, account: str = "DU0000001", symbols: str = '["AAA"]', client_id: int = 9,
           trades: str = "") -> str:
    return f"""
[ib]
port = {port}
client_id = {client_id}
account = "{account}"
symbols = {symbols}
connect_timeout_s = 60
[journal]
{'url' if '://' in journal else 'path'} = "{journal}"
""" + trades


def doctor(cfg, *extra):
    done = run("doctor", "--config", str(cfg), *extra)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def test_every_check_passes_when_run_would_start_cleanly(tmp_path):
    journal = tmp_path / "new.db"
    with fake_gateway("AAA,BBB") as port:
        cfg = tmp_path / "ok.toml"
        cfg.write_text(config(port, str(journal), trades="""
[[trades]]
ref = "b1"
symbol = "BBB"
side = "long"
qty = 10
rules = [{kind = "stop_loss", distance = 1.0}]
"""))
        done = doctor(cfg)
        assert done.returncode == 0, done.stdout
        out = done.stdout
        assert "every check passed: tickguard run would start cleanly" in out and "FAIL" not in out
        assert re.search(r"ok +API connection +server version 178, client id 9", out)
        assert re.search(r"ok +account +DU0000001", out)
        assert re.search(r"ok +market-data farms +IB connectivity ok;.*usfarm \(market data\) ok", out)
        for symbol in ("AAA", "BBB"):  # [ib] symbols and the trades' symbols
            assert re.search(rf"ok +symbol {symbol} +conId \d+, SMART/USD, min tick 0.01, next session "
                             r"\d{4}-\d\d-\d\d 09:30-16:00 US/Eastern", out), out
            assert re.search(rf"ok +what-if {symbol} +a 1-share buy would be accepted", out)
        assert re.search(r"ok +journal +.*new.db does not exist yet: run will create it", out)
        assert not journal.exists()  # doctor writes nothing
        as_json = json.loads(doctor(cfg, "--json").stdout)
        assert as_json["ok"] is True and {c["name"] for c in as_json["checks"]} >= {"account", "journal"}


def test_every_problem_is_reported_at_once(tmp_path):
    journal = tmp_path / "sim.db"
    j = Journal.open(journal)
    j.claim("simulated")
    j.close()
    with fake_gateway("AAA") as port:
        cfg = tmp_path / "bad.toml"
        cfg.write_text(config(port, str(journal), account="DU7777777", symbols='["AAA", "NOPE"]'))
        done = doctor(cfg)
    out = done.stdout
    assert done.returncode == 1, out
    assert re.search(r"FAIL +account +IB does not manage account 'DU7777777' \(ib.account\); this login manages "
                     "DU0000001", out)
    assert re.search(r"FAIL +symbol NOPE +no security definition", out)
    assert re.search(r"ok +symbol AAA", out) and re.search(r"FAIL +what-if AAA +not asked: no account", out)
    assert re.search(r"FAIL +journal +.*sim.db holds simulated trades \(tickguard sim\): run refuses it", out)
    assert "4 check(s) failed: tickguard run would not start cleanly" in out


def test_a_client_id_in_use_is_reported_at_once(tmp_path):
    """With a 60 s connect timeout, the 326 must still come back within the subprocess's deadline of 30 s."""
    with fake_gateway("AAA") as port:
        holder = IB()

        async def hold_then_doctor():
            await holder.connectAsync("127.0.0.1", port, clientId=9, timeout=10)
            try:
                return await asyncio.to_thread(run, "doctor", "--config", str(cfg), timeout=30)
            finally:
                holder.disconnect()

        cfg = tmp_path / "busy.toml"
        cfg.write_text(config(port, str(tmp_path / "j.db")))
        done = asyncio.run(hold_then_doctor())
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert re.search(r"FAIL +API connection +IB error 326: client id 9 is already in use", done.stdout), done.stdout


def test_nothing_listening_is_said_so_and_the_journal_still_checked(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        cfg = tmp_path / "down.toml"
        cfg.write_text(config(port, "postgresql://nobody:s3cret@127.0.0.1:1/none"))
        done = doctor(cfg)
    out = done.stdout
    assert done.returncode == 1
    assert re.search(rf"FAIL +reachable 127.0.0.1:{port} +nothing answers \(.*\): start TWS or IB Gateway", out)
    assert re.search(r"FAIL +journal +cannot read the journal", out) and "s3cret" not in out + done.stderr
