"""The in-process exit-path benchmark runs in its quickest form: every crossing gets its exit order from the engine and
from the bare ib_async client, and the figures are printed.  No timing is asserted: speed is measured, not tested."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "exit_path.py"


def test_every_crossing_gets_its_exit_from_the_engine_and_from_ib_async_alone():
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "40", "--crossings", "10", "--gap", "0.005",
                           "--parts"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ratio tickguard / floor: p50" in done.stdout
    assert "commit> -> commit<" in done.stdout and "place> -> sent" in done.stdout


def test_a_burst_of_crossings_in_one_read_gets_every_exit_from_both():
    """``--burst 4``: each crossing's time runs to the 4th exit order - a run that lost one would stop with a
    SystemExit naming how many came."""
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "80", "--crossings", "5", "--gap", "0.005",
                           "--burst", "4"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "of 4 symbols at once (time to the last exit order)" in done.stdout
    assert "ratio tickguard / floor: p50" in done.stdout


def test_the_floor_with_a_journal_commits_a_row_before_each_of_its_orders():
    """``--durable-floor``: the third series (write-ahead's least cost) - the bench reads its journal back and stops
    with a SystemExit when a row is missing."""
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "40", "--crossings", "6", "--gap", "0.005",
                           "--burst", "2", "--durable-floor"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "floor+journal: 12 rows committed, one before each of its 12 orders" in done.stdout
    assert "ratio floor+journal / floor: p50" in done.stdout


def test_the_exit_rehearsals_cost_is_printed():
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "40", "--crossings", "3", "--gap", "0.005",
                           "--rehearsal-cost"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "one exit rehearsal, back to back: p50" in done.stdout
    assert "one exit rehearsal, one a millisecond: p50" in done.stdout
