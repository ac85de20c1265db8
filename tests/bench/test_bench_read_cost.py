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
