"""The reconciliation-pass benchmark runs on a small day: its book agrees with the journal (no difference found - the
benchmark asserts it) and both figures are printed.  No timing is asserted."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "reconcile_pass.py"


def test_a_routine_pass_over_a_small_day_finds_no_difference_and_prints_its_figures():
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "200", "--working", "20", "--passes", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Reconciler.apply, a routine pass:" in done.stdout and "ratio pass / baseline:" in done.stdout
