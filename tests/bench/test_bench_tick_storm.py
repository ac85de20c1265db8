"""The tick-storm benchmark runs, its reference agrees with the engine in both modes, and it writes its
figures (no timing is asserted: speed is measured, not tested)."""

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tick_storm.py"


def test_quick_run_has_no_missed_or_duplicate_trigger(tmp_path):
    out = tmp_path / "storm.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"batch", "per_tick", "batch+metrics"} and {r["feed"] for r in rows} >= {"max"}
    [with_metrics] = [r for r in rows if r["mode"] == "batch+metrics"]
    assert with_metrics["metrics_on_off_ratio"] > 0 and with_metrics["telemetry_batches"] > 0
    assert 0 < with_metrics["recording_share"] < 1
    assert "metrics on / off throughput" in done.stdout
    for r in rows:
        assert r["fired"] == r["expected"] > 0 and r["missed"] == 0 and r["duplicates"] == 0 and r["extra"] == 0
        assert r["ticks_per_s"] > 0 and r["lat_p50_ms"] <= r["lat_p99_ms"] <= r["lat_max_ms"]
    assert "batch / per-tick throughput" in done.stdout


def test_replay_files_and_fired_output(tmp_path):
    ticks = tmp_path / "ticks.csv.gz"
    with gzip.open(ticks, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts_ns", "symbol", "bid", "ask"])
        rows = [(100, "X", 10.00, 10.02), (200, "X", 10.10, 10.12), (300, "X", 9.90, 9.92),
                (400, "Y", 5.00, 5.01), (500, "X", 10.30, 10.25),  # crossed: dropped by both
                (600, "Y", 4.80, 4.81), (700, "X", 9.70, 9.72)]
        w.writerows(rows)
    levels = tmp_path / "levels.csv"
    levels.write_text("order_idx,symbol,side,kind,trigger,trail_offset,qty\n"
                      "1,X,SELL,STOP,9.90,,100\n"       # fires at ts 300 (bid 9.90, inclusive)
                      "2,X,SELL,TRAIL,,0.30,100\n"      # mark 10.10 -> fires at 9.70 (ts 700)
                      "3,Y,BUY,STOP,5.10,,100\n"        # never
                      "4,Y,SELL,TRAIL,,0.15,100\n")     # mark 5.00 -> 4.80 (ts 600)
    fired = tmp_path / "fired.csv"
    done = subprocess.run([sys.executable, str(BENCH), "--ticks", str(ticks), "--levels", str(levels), "--fired",
                           str(fired), "--rates"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert fired.read_text().split() == ["order_idx,ts_ns", "1,300", "2,700", "4,600"]


def test_exact_touches_that_floats_miss_fire_on_the_touching_tick(tmp_path):
    """The cases of the exactness issue: a trailing level of 169.37 + 0.02 (169.39000000000001 in floats, which
    an ask of 169.39 never reaches), 5-decimal FX on its own grid, a BRK.A-sized price, and an offset that is
    not whole ticks (floored to one tick).  The bench's reference is integer arithmetic of its own; the engine
    must agree with it tick for tick."""
    ticks = tmp_path / "ticks.csv"
    ticks.write_text("ts_ns,symbol,bid,ask\n"
                     "100,Z,169.35,169.37\n"     # short trail: mark 169.37, offset 0.02 -> level 169.39
                     "200,Z,169.36,169.38\n"
                     "300,Z,169.37,169.39\n"     # touches it exactly
                     "400,F,1.23450,1.23455\n"   # FX: grid 0.00001 (the file's finest step)
                     "500,F,1.23441,1.23446\n"   # long stop 1.23441: touched exactly
                     "600,B,600000.00,600000.10\n"
                     "700,B,599999.99,600000.05\n")  # long trail 0.015 -> 1 tick: 599999.99 touches
    levels = tmp_path / "levels.csv"
    levels.write_text("order_idx,symbol,side,kind,trigger,trail_offset,qty\n"
                      "1,Z,BUY,TRAIL,,0.02,100\n"
                      "2,F,SELL,STOP,1.23441,,100\n"
                      "3,B,SELL,TRAIL,,0.015,1\n")
    fired = tmp_path / "fired.csv"
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(BENCH), "--ticks", str(ticks), "--levels", str(levels), "--fired",
                           str(fired), "--json", str(out), "--rates"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert fired.read_text().split() == ["order_idx,ts_ns", "1,300", "2,500", "3,700"]
    assert "F 0.00001" in done.stdout and "Z 0.01" in done.stdout
    for row in json.loads(out.read_text())["rows"]:  # both modes agree with the reference
        assert (row["fired"], row["expected"], row["missed"], row["extra"], row["duplicates"]) == (3, 3, 0, 0, 0)
