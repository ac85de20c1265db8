"""The order-book read benchmark runs on a small day and prints the longest hold of each kind of read.  No timing is
asserted: speed is measured, not tested."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "order_book_read.py"


def test_a_small_day_prints_the_holds_and_their_ratio():
    done = subprocess.run([sys.executable, str(BENCH), "--orders", "600", "--passes", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("longest hold") == 4 and "slices / one piece" in done.stdout
