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
    assert {r["mode"] for r in rows} == {"batch", "per_tick"} and {r["feed"] for r in rows} >= {"max"}
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
