"""``tickguard sim`` end to end on a fixed seed, checked against a brute-force replay of its own ticks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from replay_reference import first_exits, valid_ticks

SEED = 20261124
KEY_ID = re.compile(r"tg:([0-9a-f]{8}):")


def without_key_id(value):
    return json.loads(KEY_ID.sub("tg:<id>:", json.dumps(value)))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sim") / "report.json"
    cmd = [sys.executable, "-m", "tickguard", "sim", "--seed", str(SEED), "--duration", "3600", "--speed", "0",
           "--symbols", "4", "--trades", "40", "--no-live", "--include-ticks", "--report", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tickguard sim - summary" in done.stdout
    return json.loads(out.read_text())


def engine_first_exits(report: dict) -> dict[str, dict[str, tuple]]:
    out: dict[str, dict[str, tuple]] = defaultdict(dict)
    for ex in report["exits"]:
        if not ex["key"].endswith(":1"):
            continue  # a re-fire (rest of a partial entry, retry): the first firing is what is checked
        where = ("time", ex["tick_ts_ns"]) if ex["rule"] == "time_stop" else ("tick", ex["tick_seq"])
        out[ex["trade_id"]]["stop" if ex["leg"] == "stop" else ex["leg"]] = where
    return out


def test_run_exercises_every_rule_kind(report):
    s = report["summary"]
    assert len(report["vol_updates"]) > 0  # the intraday volatility refresh re-sized levels during the run
    assert s["trades"] == 40 and s["ticks_accepted"] > 10_000
    assert {"stop_loss", "take_profit", "trailing_stop"} <= set(s["exits_by_rule"])
    assert s["ticks_dropped"].get("crossed_quote", 0) > 0  # bad quotes were present and refused
    assert any(f["leg"] == "entry" for f in report["fills"])


def test_every_exit_fired_on_a_tick_that_crossed_its_level(report):
    ticks = {row[0]: row for row in report["ticks"]}
    trades = {t["id"]: t for t in report["trades"]}
    checked = 0
    for ex in report["exits"]:
        if ex["tick_seq"] is None or ex["tick_seq"] < 0 or ex["level"] is None or ex["price"] is None:
            continue
        _, _, _, bid, ask, _ = ticks[ex["tick_seq"]]
        side = trades[ex["trade_id"]]["side"]
        price = bid if side == "long" else ask
        assert ex["price"] == price
        s = 1 if side == "long" else -1
        if ex["leg"] == "stop":
            assert s * price <= s * ex["level"], ex
        else:
            assert s * price >= s * ex["level"], ex
        checked += 1
    assert checked >= 10


def test_engine_exits_match_brute_force_reference(report):
    ticks = valid_ticks(report["ticks"])
    fills = defaultdict(list)
    for f in report["fills"]:
        if f["leg"] == "entry":
            fills[f["trade_id"]].append(f)
    got = engine_first_exits(report)
    compared = 0
    for trade in report["trades"]:
        if trade["entry_filled"] == 0:
            assert trade["id"] not in got
            continue
        sym = trade["symbol"]
        updates = [(ts, atr, adr) for ts, s, atr, adr in report["vol_updates"] if s == sym]
        want = first_exits(trade, fills[trade["id"]], ticks[sym], report["daily_volatility"][sym], updates)
        assert got.get(trade["id"], {}) == want, (trade["id"], trade["rules"])
        compared += 1
    assert compared >= 20


def test_no_leg_sent_twice_and_positions_match_the_exchange(report):
    keys = [o["key"] for o in report["orders"]]
    assert len(keys) == len(set(keys))
    assert report["summary"]["duplicate_intents_refused"] == 0
    ours: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for t in report["trades"]:
        s = 1 if t["side"] == "long" else -1
        ours[(t["account"], t["symbol"])] += s * (Decimal(t["entry_filled"]) - Decimal(t["exited"]))
    theirs = {(a, sym): Decimal(repr(q)) for a, pos in report["meta"]["venue"]["positions"].items()
              for sym, q in pos.items()}
    assert {k: v for k, v in ours.items() if v != 0} == theirs  # exact: quantities are decimals


def test_closed_trades_are_flat_and_consistent(report):
    for t in report["trades"]:
        if t["state"] == "closed":
            assert Decimal(t["exited"]) == Decimal(t["entry_filled"])
            targets = [leg for leg in t["legs"] if leg["name"].startswith("tp")]
            assert t["close_reason"] or all(Decimal(leg["filled"]) > 0 for leg in targets)


def test_same_seed_same_report(report, tmp_path):
    out = tmp_path / "again.json"
    cmd = [sys.executable, "-m", "tickguard", "sim", "--seed", str(SEED), "--duration", "3600", "--speed", "0",
           "--symbols", "4", "--trades", "40", "--no-live", "--report", str(out)]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    again = json.loads(out.read_text())
    # Without a journal each process keys its orders with a random id of its own (tg:<id>:T00001:entry): the
    # runs are the same but for it.
    ids = [set(KEY_ID.findall(json.dumps(r["orders"]))) for r in (report, again)]
    assert all(len(i) == 1 for i in ids) and ids[0] != ids[1], ids
    for key in ("trades", "orders", "fills", "exits", "summary"):
        assert without_key_id(again[key]) == without_key_id(report[key]), key
    assert Path(out).stat().st_size > 0


def test_a_longer_run_extends_a_shorter_one_with_the_same_seed(report, tmp_path):
    """The market and the demo trades of a seed do not depend on the duration: the first half hour of the hour's
    run is the half-hour run, tick for tick, fill for fill, exit for exit."""
    out = tmp_path / "half.json"
    cmd = [sys.executable, "-m", "tickguard", "sim", "--seed", str(SEED), "--duration", "1800", "--speed", "0",
           "--symbols", "4", "--trades", "40", "--no-live", "--include-ticks", "--report", str(out)]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    half = json.loads(out.read_text())
    end = half["meta"]["end_ns"]
    assert half["meta"]["start_ns"] == report["meta"]["start_ns"]
    before = [t for t in report["ticks"] if t[2] <= end]
    assert len(half["ticks"]) > 1000 and half["ticks"] == before[:len(half["ticks"])]
    assert len(before) - len(half["ticks"]) <= 1  # at most a tick at the very end instant
    for key, ts in (("fills", "ts_ns"), ("exits", "tick_ts_ns")):
        longer = [r for r in report[key] if r[ts] < end]
        assert longer and without_key_id(half[key]) == without_key_id(longer)[:len(half[key])] and \
            len(half[key]) >= len(longer) - 1, key
    assert [t["id"] for t in half["trades"]] == [t["id"] for t in report["trades"]][:len(half["trades"])]
