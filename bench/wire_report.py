"""What ``bench/wire_to_wire.py`` prints of a run: each client's phases, the ratios to the floor, the probes'
breakdown, CPU use - and, with ``--pairs``, each pair's ratios and their median.  Its own module: the benchmark's
driver (processes, gateway, analysis) is long enough without the printing."""

from __future__ import annotations

import statistics
from typing import Any


def report_pairs(results: dict[str, Any], pairs: list[dict[str, Any]]) -> bool:
    """The other pairs' rows, then each pair's ratios and their median per rate (``results["pairs"]`` and
    ``results["median_ratios"]``); False if any pair missed an exit."""
    ok = True
    kept = []
    for n, runs in enumerate(pairs[1:], start=2):
        print(f"--- pair {n}")
        sub = {"runs": runs}
        ok = report(sub) and ok
        kept.append({"runs": runs, "ratios": sub.get("ratios", [])})
    results["pairs"] = [{"ratios": results.get("ratios", [])}, *kept]
    by_rate: dict[Any, list[dict[str, Any]]] = {}
    for pair in results["pairs"]:
        for r in pair["ratios"]:
            by_rate.setdefault(r["rate"], []).append(r)
    results["pooled"] = pooled(results, pairs)
    results["median_ratios"] = []
    for rate, rs in by_rate.items():
        p50s, p99s = sorted(r["p50_ratio"] for r in rs), sorted(r["p99_ratio"] for r in rs)
        med = {"rate": rate, "pairs": len(rs), "p50_ratio": statistics.median(p50s),
               "p99_ratio": statistics.median(p99s)}
        results["median_ratios"].append(med)
        print(f"tickguard / floor at {rate!s:>5}/s over {len(rs)} pairs: p50 ratios "
              f"{', '.join(f'{v:.2f}' for v in p50s)} (median {med['p50_ratio']:.2f}x); p99 ratios "
              f"{', '.join(f'{v:.2f}' for v in p99s)} (median {med['p99_ratio']:.2f}x)")
    results["ok"] = results["ok"] and ok
    return ok


def pooled(results: dict[str, Any], pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each client's crossings of every pair together, per rate: with 200 crossings a run's p99 is its second or
    third worst crossing, so it swings with one scheduler hiccup; over 3 pairs it is the seventh worst of 600.
    Printed and kept as ``results["pooled"]``."""
    out = []
    rates = [ph["rate"] for ph in next(iter(pairs[0].values()))["phases"]]
    for idx, rate in enumerate(rates):
        row: dict[str, Any] = {"rate": rate, "pairs": len(pairs)}
        for kind in pairs[0]:
            lat = sorted(x for runs in pairs if kind in runs for x in runs[kind]["phases"][idx]["latencies_ms"])
            if lat:
                row[kind] = {"crossings": len(lat), "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
                             "max_ms": lat[-1]}
        out.append(row)
        parts = [f"{k} p50 {v['p50_ms']:.2f} / p99 {v['p99_ms']:.2f} ms ({v['crossings']} crossings)"
                 for k, v in row.items() if isinstance(v, dict)]
        ratio = ""
        if "tickguard" in row and "floor" in row:
            t, f = row["tickguard"], row["floor"]
            ratio = f"; ratios p50 {t['p50_ms'] / f['p50_ms']:.2f}x, p99 {t['p99_ms'] / f['p99_ms']:.2f}x"
        print(f"pooled over {len(pairs)} pairs at {rate!s:>5}/s: " + "; ".join(parts) + ratio)
    return out


def _pct(s: list[float], q: float) -> float:
    """``q``-quantile of sorted ``s`` (nearest rank, as the runs' own figures)."""
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def report(results: dict[str, Any]) -> bool:
    ok = True
    head = (f"{'client':<10} {'rate/s':>7} {'sent/s':>8} {'cross':>5} {'exits':>5} {'miss':>4} {'wrong':>5} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} {'>50ms':>5} {'rxmax KB':>8} {'rxend':>6} {'drift':>6}")
    print(head)
    for kind, run in results["runs"].items():
        if run["gateway_error"]:
            print(f"!!! {kind}: gateway error: {run['gateway_error']}")
            ok = False
        for ph in run["phases"]:
            print(f"{kind:<10} {ph['rate']!s:>7} {ph['sent_per_s']:>8} {ph['crossings']:>5} {ph['exits']:>5} "
                  f"{ph['missing']:>4} {ph['wrong_trade']:>5} {ph['p50_ms']:>7.2f} {ph['p99_ms']:>7.2f} "
                  f"{ph['max_ms']:>8.2f} {ph['slow_over_50ms']:>5} {ph['client_rx_backlog_max_bytes'] / 1024:>8.1f} "
                  f"{ph['client_rx_backlog_end_bytes']:>6} {ph['latency_drift_ms']:>6.2f}")
            if ph["missing"] or ph["wrong_trade"]:
                ok = False
                print(f"!!! {kind} at {ph['rate']}: {ph['missing']} MISSING EXITS, {ph['wrong_trade']} exits for "
                      f"the wrong trade")
        if run["unexpected_exits"]:
            ok = False
            print(f"!!! {kind}: {run['unexpected_exits']} UNEXPECTED exits (no crossing waiting for them)")
    runs = results["runs"]
    if "tickguard" in runs and "floor" in runs:
        ratios = []
        for a, b in zip(runs["tickguard"]["phases"], runs["floor"]["phases"], strict=False):
            r = {"rate": a["rate"], "p50_ratio": a["p50_ms"] / b["p50_ms"], "p99_ratio": a["p99_ms"] / b["p99_ms"]}
            ratios.append(r)
            print(f"tickguard / floor at {a['rate']!s:>5}/s: p50 {a['p50_ms']:.2f} / {b['p50_ms']:.2f} ms = "
                  f"{r['p50_ratio']:.1f}x; p99 {a['p99_ms']:.2f} / {b['p99_ms']:.2f} ms = {r['p99_ratio']:.1f}x")
        results["ratios"] = ratios
    bd = runs.get("tickguard", {}).get("breakdown")
    if bd:
        print("tickguard breakdown per crossing (ms, p50 / p99), from the probes:")
        for phase, parts in bd["per_phase"].items():
            print(f"  phase {phase}: " + ", ".join(f"{k} {v['p50']:.2f}/{v['p99']:.2f}" for k, v in parts.items()))
        print("  calls while streaming (ms): " + "; ".join(
            f"{k} n={v['n']} p50 {v['p50']:.3f} p99 {v['p99']:.3f} max {v['max']:.1f}" for k, v in bd["calls"].items()))
        print(f"  gc pauses: {bd['gc_count']}, longest {bd['gc_pauses_ms_top'][-3:]} ms; longest engine steps "
              f"(ms, events): {bd['longest_steps_ms'][-5:]}")
    for kind, run in results["runs"].items():
        for ph in run["phases"]:
            if ph.get("cpu"):
                print(f"cpu at {ph['rate']!s:>5}/s with {kind:<9}: " + "; ".join(
                    f"{name} main thread {v['core_share']:.0%} of a core, runnable but waiting "
                    f"{v['runqueue_wait_ms_per_s']} ms/s ({v['runs_per_s']} times on a CPU a second, "
                    f"{v['wait_us_per_run']} us waited each)" for name, v in ph["cpu"].items()))
    print("rxmax/rxend: the client's unread bytes on its socket (max while streaming, just after); drift: median "
          "latency of the last quarter of crossings minus the first quarter (ms) - both ~0 when the client keeps up")
    results["ok"] = ok
    return ok

