"""The journal latency bench runs and writes sane figures.

Only the shape and internal consistency of the figures are checked - never a timing threshold, which would
make the test depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "journal_latency.py"
BACKENDS = ("sqlite-normal", "sqlite-full", "postgresql")


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "journal.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "summary:" in proc.stdout
    return json.loads(out.read_text(encoding="utf-8"))


def check_dist(d: dict[str, float], nonempty: bool = True) -> None:
    assert set(d) >= {"n", "p50_us", "p99_us", "max_us"}
    if nonempty:
        assert d["n"] > 0
    assert 0 <= d["p50_us"] <= d["p99_us"] <= d["max_us"]
    assert all(math.isfinite(v) for v in d.values())


def measured(figures: dict[str, Any], section: str) -> list[str]:
    """The backends that ran: PostgreSQL may be skipped, but then it says why."""
    ran = []
    for backend in BACKENDS:
        if "skipped" in figures[section][backend]:
            assert backend == "postgresql" and figures[section][backend]["skipped"]
        else:
            ran.append(backend)
    assert {"sqlite-normal", "sqlite-full"} <= set(ran)
    return ran


def test_machine_is_noted(figures: dict[str, Any]) -> None:
    m = figures["machine"]
    assert m["cores"] > 0 and m["cpu"] and m["python"].startswith("3.")


def test_sim_sessions_against_the_baseline(figures: dict[str, Any]) -> None:
    base = figures["sim"]["baseline"]
    assert base["ticks"] > 0 and base["orders"] > 0 and base["commits"] == 0
    assert base["throughput_ratio"] == pytest.approx(1.0)
    check_dist(base["step_latency"])
    for backend in measured(figures, "sim"):
        r = figures["sim"][backend]
        assert r["ticks"] == base["ticks"]  # the same seeded session
        assert r["orders"] > 0 and r["commits"] > 0 and r["steps"] > 0
        for key in ("wall_s", "ticks_per_s", "throughput_ratio", "wall_ratio", "commits_per_s", "realtime_x"):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert r["rows_per_commit"] >= 1 and r["events_per_commit"] > 0
        check_dist(r["step_latency"])
        check_dist(r["commit_latency"])
        check_dist(r["gc_pause"], nonempty=False)  # a short run may see no collection at all


def test_offered_rate_microbench(figures: dict[str, Any]) -> None:
    rates = figures["params"]["rates"]
    for backend in measured(figures, "micro"):
        for rate in rates:
            res = figures["micro"][backend][str(rate)]
            ratio = res["cost_ratio_batched_vs_unbatched"]
            assert math.isfinite(ratio) and ratio > 0
            for mode in ("batched", "unbatched"):
                r = res[mode]
                assert r["offered"] > 0 and r["written"] + r["backlog"] == r["offered"]
                assert r["commits"] > 0 and r["cost_us_per_change"] > 0
                check_dist(r["latency"])
                check_dist(r["commit_latency"])
            # one commit per row unbatched; batched, a commit holds at least one whole change
            assert res["unbatched"]["rows_per_commit"] == pytest.approx(1.0)
            assert res["batched"]["changes_per_commit"] >= 1


def test_summary_per_backend(figures: dict[str, Any]) -> None:
    assert set(figures["summary"]) == set(BACKENDS)
    assert all(line.startswith(b) for b, line in figures["summary"].items())
