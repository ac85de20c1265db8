"""The scrape-cost benchmark runs and reports its figures (no timing is asserted: speed is measured, not tested)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "metrics_scrape.py"


def test_quick_run_reports_the_cost_of_scrapes(tmp_path):
    out = tmp_path / "scrape.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    without, scraped = result["rounds"].values()
    assert without["scrapes"] == 0 and scraped["scrapes"] > 0 and scraped["scrape_max_ms"] > 0
    assert without["live_trades"] == scraped["live_trades"] == 200  # the same engine both times
    assert result["ratio"] > 0 and result["hold"]["longest_loop_hold_ms"] > 0
    assert "engine throughput with scrapes / without" in done.stdout
