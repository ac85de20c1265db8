"""The wire-to-wire benchmark runs end to end in its quickest form: the real ``tickguard run`` process and the bare
ib_async floor client, each against the benchmark's gateway process; every planned crossing gets exactly its exit
(the right trade, nothing missing, nothing extra).  No timing is asserted: speed is measured, not tested."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "wire_to_wire.py"


def test_every_crossing_gets_its_exit_tickguard_and_floor_in_each_pair(tmp_path):
    out = tmp_path / "wtw.json"
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "24", "--symbols", "3", "--crossings", "9",
                           "--rates", "2000", "--exit-timeout", "5", "--pairs", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["ok"] and set(result["runs"]) == {"tickguard", "floor"}
    assert len(result["pairs"]) == 2 and set(result["pairs"][1]["runs"]) == {"tickguard", "floor"}
    for runs in (result["runs"], result["pairs"][1]["runs"]):
        for kind, run in runs.items():
            assert run["gateway_error"] is None and not run["gateway_protocol_errors"], (kind, run)
            assert run["unexpected_exits"] == 0, kind
            (phase,) = run["phases"]
            assert phase["crossings"] == phase["exits"] == 9 and phase["missing"] == 0, (kind, phase)
            assert phase["wrong_trade"] == 0 and 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    ratios = sorted(pair["ratios"][0]["p50_ratio"] for pair in result["pairs"])
    (median,) = result["median_ratios"]
    assert median["rate"] == 2000 and median["pairs"] == 2 and median["p50_ratio"] == sum(ratios) / 2
    assert "tickguard / floor at" in done.stdout and "over 2 pairs" in done.stdout
    (pool,) = result["pooled"]  # both pairs' crossings together, per client
    for kind in ("tickguard", "floor"):
        lat = sorted(x for runs in (result["runs"], result["pairs"][1]["runs"])
                     for x in runs[kind]["phases"][0]["latencies_ms"])
        assert pool[kind]["crossings"] == len(lat) == 18 and pool[kind]["max_ms"] == lat[-1]
        assert pool[kind]["p50_ms"] == lat[round(0.5 * 17)] and pool[kind]["p99_ms"] == lat[round(0.99 * 17)]
    assert "pooled over 2 pairs at  2000/s: tickguard p50" in done.stdout
    for when in ("before", "after"):  # the machine's wake-up round trip, measured around the runs
        wake = result["machine"][f"wakeup_{when}"]
        assert wake["n"] == 1500 and 0 < wake["p50_us"] <= wake["p99_us"] <= wake["p999_us"] <= wake["max_us"]
        assert f"machine, {when} the runs: wake-up round trip" in done.stdout


def test_pinned_run_puts_the_client_and_the_gateway_on_cpus_of_their_own(tmp_path):
    out = tmp_path / "wtw.json"
    done = subprocess.run([sys.executable, str(BENCH), "--trades", "12", "--symbols", "2", "--crossings", "4",
                           "--rates", "2000", "--exit-timeout", "5", "--no-floor", "--pin", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["ok"] and result["pinned"] is True
    assert result["runs"]["tickguard"]["cpus"] == {"client": [0], "gateway": [1]}
    assert "pinned: client on CPU 0, gateway on CPU 1" in done.stdout
    (phase,) = result["runs"]["tickguard"]["phases"]
    assert phase["exits"] == phase["crossings"] == 4 and phase["missing"] == 0
