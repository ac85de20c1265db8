"""Wire-to-wire latency of a stop exit: crossing quote written by the gateway -> exit order decoded by the gateway.

Measured from outside the engine, on one clock (the gateway's ``perf_counter_ns``, CLOCK_MONOTONIC): the real
``tickguard run`` process, connected over TCP to a gateway process (``bench/wire_gateway.py``: the project's
fake IB Gateway with a quote stream driven by this benchmark).  N long trades (qty 1, market entries filled by
the gateway) with fixed ``stop_loss`` prices spread over S symbols (trade j of a symbol: stop 99.00 - 0.01 j;
quotes otherwise stay between 99.50 and 100.10), so a crossing - one bid message onto the highest stop not yet
crossed - fires exactly one known exit.  Quotes are single tickPrice messages streamed at each rate (messages/s;
``max`` = as fast as the gateway writes), with crossings spread evenly (about 20 a second at a set rate).

Floor, in the same run: the same gateway and stream against a bare ``ib_async`` client
(``bench/wire_floor_client.py``) that places a market order the moment ``pendingTickersEvent`` shows a bid at
or below its next level.  Ratios tickguard / floor (p50, p99) are printed per rate.

Backlog: the engine's unread bytes on its socket (``rx_queue`` in /proc/net/tcp, sampled every 10 ms by this
process) and latency drift within a phase say whether the engine kept up with the offered rate.

    python bench/wire_to_wire.py [--trades 5000] [--symbols 20] [--rates 1000,10000,max] [--crossings 200]
                                 [--quick] [--json FILE] [--py-spy FILE [--py-spy-rate N]]
                                 [--no-floor] [--pin] [--pairs N]

Opening N trades goes through N market entries; the engine's message budget (``[throttle] rate`` 45/s by default)
would take N/45 s, so the bench raises ``[throttle] rate/burst`` (and the gateway's pacing limit) and the entry
queue bounds (see ``BENCH_THROTTLE``, printed with the results).  Exits in the measured phases are ~20/s at the
set rates (below the default budget); at ``max`` they come faster and the raised budget matters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import machine_wakeup  # noqa: E402
from wire_gateway import build_plan  # noqa: E402
from wire_report import report, report_pairs  # noqa: E402
from wire_sampler import BacklogSampler, cpu_use, wait_quiet  # noqa: E402

PY = sys.executable
TICKGUARD = str(Path(PY).with_name("tickguard"))
BENCH_THROTTLE = {"rate": 300, "burst": 50, "entry_queue_max": 1_000_000, "entry_wait_max_s": 3600.0,
                  "breaker_rejections": 10_000, "efficiency_min_orders": 1_000_000}
ACCOUNT = "DU0000001"


# ------------------------------------------------------------------------------------------------ helpers


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "kernel": platform.release()}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float, what: str) -> str:
    """The first stdout line of ``proc`` that starts with ``prefix`` (deadline ``timeout``)."""
    result: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                result.append(line.strip())
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise RuntimeError(f"{what}: no '{prefix}' within {timeout:.0f} s (exit code {proc.poll()})")
    return result[0]


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def toml_config(plan: dict[str, Any], port: int, journal: Path, throttle: dict[str, Any]) -> str:
    lines = ["[ib]", 'host = "127.0.0.1"', f"port = {port}", "client_id = 17", f'account = "{ACCOUNT}"',
             "symbols = [" + ", ".join(f'"{s}"' for s in plan["symbols"]) + "]", "first_quote_timeout_s = 30",
             "", "[journal]", f'path = "{journal}"', "",
             "[metrics]", 'address = "127.0.0.1:0"  # served as usual, on any free port: runs side by side never clash',
             "", "[throttle]"]
    lines += [f"{k} = {v}" for k, v in throttle.items()]
    lines.append("")
    most = max(len(v) for v in plan["levels"].values())
    for j in range(most):  # trade j of every symbol, then j + 1: within a symbol, trade ids follow the stops down
        for sym in plan["symbols"]:
            levels = plan["levels"][sym]
            if j < len(levels):
                stop = levels[j] / 100
                lines += ["[[trades]]", f'ref = "{sym}-{j}"', f'symbol = "{sym}"', 'side = "long"', "qty = 1",
                          f'rules = [{{ kind = "stop_loss", price = {stop:.2f} }}]']
    return "\n".join(lines) + "\n"


def journal_open_count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("select count(*) from trades where state = 'open'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


# ------------------------------------------------------------------------------------------------ one client


def pin(pid: int, on: bool, cpu: int) -> None:
    """``--pin``: the process (and the threads it starts later: they inherit it) on one CPU of its own - the client
    on CPU 0, the gateway and this process on CPU 1.  On 2 cores, unpinned, each wake-up of either side waits for a
    CPU behind the other (the ``cpu at`` lines); pinned, the client's tail is its own work, as on a deployment that
    gives the engine a core (IB Gateway is a separate JVM, usually elsewhere)."""
    if on:
        os.sched_setaffinity(pid, {cpu})


def run_client(kind: str, plan: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Gateway + one client (``tickguard`` or ``floor``) through every phase; the gateway's record, analysed."""
    tag = f"{kind}"
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(plan))
    out_file = work / f"gateway_{tag}.json"
    gw_err = open(work / f"gateway_{tag}.log", "w")  # noqa: SIM115
    gw = subprocess.Popen([PY, str(HERE / "wire_gateway.py"), "--plan", str(plan_file), "--out", str(out_file),
                           "--exit-timeout", str(args.exit_timeout)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=gw_err, text=True)
    pin(gw.pid, args.pin, 1)
    client: subprocess.Popen[Any] | None = None
    drain_s = 0.0
    spy: subprocess.Popen[Any] | None = None
    sampler: BacklogSampler | None = None
    setup_s = 0.0
    cpus: dict[str, list[int]] = {}
    try:
        port = int(read_line(gw, "LISTENING", 30, "gateway").split()[1])
        t_setup = time.monotonic()
        log = open(work / f"{tag}.log", "w")  # noqa: SIM115
        if kind == "tickguard":
            journal = work / "journal.db"
            cfg = work / "bench.toml"
            cfg.write_text(toml_config(plan, port, journal, BENCH_THROTTLE))
            cmd = [PY, str(HERE / "wire_probe.py")] if args.probe else [TICKGUARD]
            env = dict(os.environ, WTW_PROBE_OUT=str(work / "probe.jsonl"))
            client = subprocess.Popen([*cmd, "run", "--config", str(cfg), "--no-live"],
                                      stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
            pin(client.pid, args.pin, 0)
            deadline = time.monotonic() + 60 + plan["trades"] / 20
            n = plan["trades"]
            while journal_open_count(journal) < n:
                if client.poll() is not None:
                    raise RuntimeError(f"tickguard run exited ({client.returncode}) before its trades opened; "
                                       f"see {work / (tag + '.log')}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {journal_open_count(journal)} of {n} trades open after "
                                       f"{time.monotonic() - t_setup:.0f} s; see {work / (tag + '.log')}")
                time.sleep(0.2)
        else:
            client = subprocess.Popen([PY, str(HERE / "wire_floor_client.py"), "--plan", str(plan_file),
                                       "--port", str(port)], stdout=subprocess.PIPE, stderr=log, text=True)
            pin(client.pid, args.pin, 0)
            read_line(client, "READY", 60, "floor client")
        setup_s = time.monotonic() - t_setup
        cpus = {"client": sorted(os.sched_getaffinity(client.pid)), "gateway": sorted(os.sched_getaffinity(gw.pid))}
        sampler = BacklogSampler(port, pids={"client": client.pid, "gateway": gw.pid})
        sampler.start()
        drain_s = wait_quiet(sampler, client, args.settle)
        if kind == "tickguard" and args.py_spy:
            spy = subprocess.Popen([str(Path(PY).with_name("py-spy")), "record", "-p", str(client.pid),
                                    "-o", args.py_spy, "-f", "raw", "-r", str(args.py_spy_rate), "--nonblocking"],
                                   stdout=subprocess.DEVNULL,
                                   stderr=open(work / "py-spy.log", "w"))  # noqa: SIM115
            time.sleep(1.0)
        assert gw.stdin is not None
        gw.stdin.write("GO\n")
        gw.stdin.flush()
        budget = 120 + sum(p["crossings"] * p["spacing"] for p in plan["phases"]) / 1000
        read_line(gw, "DONE", budget, "gateway")
    finally:
        if sampler is not None:
            sampler.stop.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        stop_process(client)
        if gw.stdin is not None:
            try:
                gw.stdin.close()  # the gateway closes once its client is gone
                gw.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(gw)
        gw_err.close()
    record = json.loads(out_file.read_text())
    result = analyse(kind, plan, record, sampler.samples if sampler else [], setup_s)
    for phase, ph in zip(result["phases"], record["phases"], strict=False):
        phase["cpu"] = cpu_use(sampler.cpu if sampler else [], ph["t0_ns"], ph["t_end_ns"])
    result["drain_s"] = round(drain_s, 2)
    result["cpus"] = cpus  # the CPUs each process could run on while it streamed
    if kind == "tickguard" and args.probe and (work / "probe.jsonl").exists():
        result["breakdown"] = probe_breakdown(work / "probe.jsonl", record)
    return result


PARTS = ["wait_read", "read_to_step", "step_to_submit", "submit_to_commit", "commit", "commit_to_place", "place",
         "place_to_gateway"]


def probe_breakdown(path: Path, rec: dict[str, Any]) -> dict[str, Any]:
    """Where each crossing's milliseconds went, from the probes of ``bench/wire_probe.py`` (same clock)."""
    import bisect

    probes: dict[str, list[tuple[int, int, Any]]] = {}
    with open(path) as fh:
        for line in fh:
            name, t0, t1, detail = json.loads(line)
            probes.setdefault(name, []).append((t0, t1, detail))
    for v in probes.values():
        v.sort()
    place = {d: (t0, t1) for t0, t1, d in probes.get("place", [])}
    submit = {d: (t0, t1) for t0, t1, d in probes.get("submit", [])}
    reads = probes.get("read", [])
    read_starts = [r[0] for r in reads]
    steps = probes.get("step", [])
    step_starts = [s[0] for s in steps]
    commits = probes.get("commit", [])
    commit_starts = [c[0] for c in commits]
    sqls = [s[0] for s in probes.get("sql", [])]
    gcs = probes.get("gc", [])
    rows = []
    for c in rec["crossings"]:
        if c["exit_ns"] is None or c["exit_ref"] not in place:
            continue
        s_ns, e_ns = c["sent_ns"], c["exit_ns"]
        p0, p1 = place[c["exit_ref"]]
        q0, q1 = submit.get(c["exit_ref"], (p0, p0))
        i = bisect.bisect_left(read_starts, s_ns)
        r0 = reads[i][0] if i < len(reads) else p0
        j = bisect.bisect_right(step_starts, q0) - 1
        st0 = steps[j][0] if j >= 0 else q0
        k = bisect.bisect_right(commit_starts, p0) - 1
        c0, c1 = commits[k][:2] if k >= 0 and commits[k][0] >= q1 else (q1, q1)
        # steps that ran between the crossing's send and the step that acted on it: the engine was busy
        busy = sum(min(t1, st0) - max(t0, s_ns) for t0, t1, _ in steps[max(0, j - 200):j] if t1 > s_ns and t0 < st0)
        rows.append({
            "idx": c["idx"], "phase": c["phase"], "total": (e_ns - s_ns) / 1e6,
            "wait_read": (r0 - s_ns) / 1e6, "read_to_step": (st0 - r0) / 1e6, "step_to_submit": (q0 - st0) / 1e6,
            "submit_to_commit": (c0 - q0) / 1e6, "commit": (c1 - c0) / 1e6, "commit_to_place": (p0 - c1) / 1e6,
            "place": (p1 - p0) / 1e6, "place_to_gateway": (e_ns - p1) / 1e6,
            "other_steps_busy": busy / 1e6,
            "sql_in_step": bisect.bisect_left(sqls, p0) - bisect.bisect_left(sqls, st0),
            "gc_ms": sum(min(t1, e_ns) - max(t0, s_ns) for t0, t1, _ in gcs if t1 > s_ns and t0 < e_ns) / 1e6,
        })
    summary: dict[str, Any] = {}
    for phase in sorted({r["phase"] for r in rows}):
        sel = [r for r in rows if r["phase"] == phase]
        summary[str(phase)] = {k: {"p50": round(pct([r[k] for r in sel], 0.5), 3),
                                   "p99": round(pct([r[k] for r in sel], 0.99), 3),
                                   "mean": round(sum(r[k] for r in sel) / len(sel), 3)}
                               for k in ["total", *PARTS, "other_steps_busy", "sql_in_step", "gc_ms"]}
    first = min((c["sent_ns"] for c in rec["crossings"]), default=0)
    last = max((c["exit_ns"] or c["sent_ns"] for c in rec["crossings"]), default=0)
    spans = {name: [(t1 - t0) / 1e6 for t0, t1, _ in items if first <= t0 <= last] for name, items in probes.items()}
    calls = {name: {"n": len(d), "p50": round(pct(d, 0.5), 3), "p99": round(pct(d, 0.99), 3), "max": round(max(d), 3),
                    "total_ms": round(sum(d), 1)} for name, d in spans.items() if d}
    gc_all = [(t1 - t0) / 1e6 for t0, t1, _ in gcs]
    step_all = sorted(((t1 - t0) / 1e6, t0, d) for t0, t1, d in steps)
    return {"per_phase": summary, "rows": rows, "gc_pauses_ms_top": sorted(gc_all)[-10:],
            "gc_count": len(gc_all), "longest_steps_ms": [(round(d, 2), n) for d, _, n in step_all[-10:]],
            "steps": len(steps), "reads": len(reads), "calls": calls}


def analyse(kind: str, plan: dict[str, Any], rec: dict[str, Any], samples: list[tuple[int, int, int]],
            setup_s: float) -> dict[str, Any]:
    # which trade each stop level belongs to: tickguard numbers trades in config order (trade j of every symbol)
    entries: dict[str, list[str]] = {}
    for _ts, sym, action, ref, _type, _qty in rec["placed"]:
        if action == "BUY" and ref.endswith(":entry"):
            entries.setdefault(sym, []).append(ref.split(":")[2])
    for ids in entries.values():
        ids.sort()
    phases = []
    for idx, ph in enumerate(rec["phases"]):
        cs = [c for c in rec["crossings"] if c["phase"] == idx]
        lat = [(c["exit_ns"] - c["sent_ns"]) / 1e6 for c in cs if c["exit_ns"] is not None]
        missing = [c for c in cs if c["exit_ns"] is None]
        wrong = 0
        for c in cs:
            if c["exit_ns"] is None:
                continue
            j = round(99_00 - c["level"] * 100)
            if kind == "floor":
                wrong += c["exit_ref"] != f"floor:{c['symbol']}:{j}"
            else:
                ids = entries.get(c["symbol"], [])
                expected = ids[j] if j < len(ids) else "?"
                parts = c["exit_ref"].split(":")
                wrong += not (len(parts) >= 4 and parts[2] == expected and parts[3] == "stop")
        t0, t1 = ph["t0_ns"], ph["t_end_ns"]
        inside = [s for s in samples if t0 <= s[0] <= t1]
        after = [s for s in samples if s[0] > t1]
        msg_bytes = 30.0
        max_rx = max((s[1] for s in inside), default=0)
        end_rx = after[0][1] if after else (inside[-1][1] if inside else 0)
        q = max(1, len(lat) // 4)
        drift = pct(lat[-q:], 0.5) - pct(lat[:q], 0.5) if len(lat) >= 8 else float("nan")
        rate = ph["rate"] or ph["sent_per_s"]
        phases.append({
            "rate": ph["rate"] or "max", "messages": ph["messages"], "sent_per_s": round(ph["sent_per_s"]),
            "crossings": len(cs), "exits": len(lat), "missing": len(missing), "wrong_trade": wrong,
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat, default=float("nan")),
            "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
            "slow_over_50ms": sum(1 for v in lat if v > 50),
            "client_rx_backlog_max_bytes": max_rx, "client_rx_backlog_end_bytes": end_rx,
            "client_rx_backlog_max_ms": round(max_rx / msg_bytes / rate * 1e3, 2),
            "gateway_write_buffer_max": ph["max_write_buffer"],
            "crossing_write_backlog_max": max((c["write_backlog"] for c in cs), default=0),
            "latency_drift_ms": drift,
            "latencies_ms": [round(v, 4) for v in lat],
        })
    extra = [p for p in rec["unmatched_exits"]
             if (kind == "floor" and str(p.get("ref", "")).startswith("floor:")) or ":stop:" in str(p.get("ref", ""))]
    return {"client": kind, "setup_s": round(setup_s, 1), "phases": phases, "unexpected_exits": len(extra),
            "gateway_error": rec.get("error"), "gateway_protocol_errors": rec.get("gateway_errors"),
            "unsupported": rec.get("unsupported")}


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trades", type=int, default=None, help="open trades (default 5000, --quick 500)")
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--rates", default=None, help="messages/s, comma separated; max = as fast as possible")
    p.add_argument("--crossings", type=int, default=None, help="crossings per rate (default 200, --quick 40)")
    p.add_argument("--quick", action="store_true", help="500 trades, 40 crossings per rate")
    p.add_argument("--no-floor", action="store_true", help="skip the bare ib_async client")
    p.add_argument("--only-floor", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--exit-timeout", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=1.0, help="seconds the client's socket must stay drained "
                   "before the stream starts")
    p.add_argument("--json", default=None, help="default bench/results/wire_to_wire_<date>.json")
    p.add_argument("--py-spy", default=None, help="py-spy record (raw) of tickguard run while it streams")
    p.add_argument("--py-spy-rate", type=int, default=500, help="samples per second of --py-spy (it slows the "
                   "engine: the latencies of a profiled run are not the benchmark's)")
    p.add_argument("--probe", action="store_true", help="run tickguard under bench/wire_probe.py (time-stamp "
                   "probes, from outside src/tickguard) and print where each exit's milliseconds went")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, journal, config)")
    p.add_argument("--pin", action="store_true", help="the client on CPU 0, the gateway and this process on CPU 1 "
                   "(needs 2 CPUs): the client's tail without the scheduler's share")
    p.add_argument("--pairs", type=int, default=1, help="run tickguard and the floor one after the other this many "
                   "times and report each pair's ratios and their median: the machine's speed drifts between runs "
                   "minutes apart, and a ratio of two runs far apart carries that drift")
    args = p.parse_args(argv)
    if args.py_spy and not Path(PY).with_name("py-spy").exists():
        p.error(f"--py-spy needs py-spy next to {PY} (not a dependency of tickguard: .venv/bin/pip install py-spy)")
    if args.pin:
        if len(os.sched_getaffinity(0)) < 2:
            p.error("--pin needs 2 CPUs")
        os.sched_setaffinity(0, {1})
    trades = args.trades or (500 if args.quick else 5000)
    crossings = args.crossings or (40 if args.quick else 200)
    rates = [0 if r.strip() == "max" else int(r) for r in (args.rates or "1000,10000,max").split(",")]
    plan = build_plan(args.symbols, trades, crossings, rates)
    work = Path(tempfile.mkdtemp(prefix="wire_to_wire_"))
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores, Python {mach['python']}, Linux {mach['kernel']}")
    pair = (0, 1) if args.pin else None  # pinned: the client's CPU and the gateway's
    mach["wakeup_before"] = machine_wakeup.measure(cpus=pair)  # the machine's share of every tail (its docstring)
    print(f"machine, before the runs: {machine_wakeup.describe(mach['wakeup_before'])}")
    print(f"{trades} open long trades (qty 1, fixed stops) over {args.symbols} symbols; {crossings} crossings per "
          f"rate; bench throttle {BENCH_THROTTLE} (gateway pacing limit raised to 1,000,000/s); work dir {work}"
          + ("; pinned: client on CPU 0, gateway on CPU 1" if args.pin else ""))
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": mach, "trades": trades,
                               "symbols": args.symbols, "crossings_per_rate": crossings, "rates": rates,
                               "throttle": BENCH_THROTTLE, "pinned": args.pin, "runs": {}}
    kinds = (["tickguard"] if not args.only_floor else []) + ([] if args.no_floor else ["floor"])
    pairs: list[dict[str, Any]] = []
    for n in range(max(1, args.pairs)):
        runs: dict[str, Any] = {}
        for kind in kinds:
            sub = work / (kind if n == 0 else f"{kind}_{n + 1}")
            sub.mkdir()
            runs[kind] = run_client(kind, plan, sub, args)
            print(f"{kind}{'' if args.pairs <= 1 else f' (pair {n + 1})'}: setup {runs[kind]['setup_s']} s (trades "
                  f"open / client ready), then its socket drained in {runs[kind]['drain_s']} s")
        pairs.append(runs)
    results["runs"] = pairs[0]
    mach["wakeup_after"] = machine_wakeup.measure(cpus=pair)
    print(f"machine, after the runs: {machine_wakeup.describe(mach['wakeup_after'])}")
    ok = report(results)
    if len(pairs) > 1:
        ok = report_pairs(results, pairs) and ok
    out = Path(args.json) if args.json else HERE / "results" / f"wire_to_wire_{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"JSON: {out}")
    if not args.keep and ok:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
