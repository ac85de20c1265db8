"""The per-read cost benchmark runs in its quickest form: every read reaches the engine's step and the bare ib_async
client, and the figures are printed.  No timing is asserted: speed is measured, not tested."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "read_cost.py"


def test_every_read_is_consumed_by_the_engine_and_by_ib_async_alone():
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "40", "--reads", "20", "--quotes", "6"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20 reads of 6 quotes each" in done.stdout
    assert "tickguard's own per read: mean" in done.stdout and "ratio tickguard / floor: mean" in done.stdout


def test_reads_of_one_quote_each_are_all_consumed():
    """At 10,000 quotes/s most reads hold one quote: each one a new price for its side, so each wakes a step
    (a repeated price woke none, and the read waited for some later step - or failed after 10 s)."""
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "40", "--reads", "300", "--quotes", "1"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "300 reads of 1 quotes each" in done.stdout
