"""``bench/machine_wakeup.py`` measures one-byte round trips between two processes and reports their percentiles in
order; on two CPUs each side runs on its own.  No timing is asserted: speed is measured, not tested."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(HERE))

import machine_wakeup  # noqa: E402


def test_round_trips_are_measured_and_ordered():
    m = machine_wakeup.measure(n=200, gap_s=0.0002)
    assert m["n"] == 200 and m["gap_s"] == 0.0002
    assert 0 < m["p50_us"] <= m["p99_us"] <= m["p999_us"] <= m["max_us"]
    allowed = sorted(os.sched_getaffinity(0))
    assert m["cpus"] == (allowed[:2] if len(allowed) > 1 else allowed * 2)
    assert "p99" in machine_wakeup.describe(m)


def test_the_command_prints_one_line():
    done = subprocess.run([sys.executable, str(HERE / "machine_wakeup.py"), "--n", "50", "--gap", "0.0001"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wake-up round trip between two processes") and done.stdout.count("\n") == 1
