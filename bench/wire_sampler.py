"""What the wire-to-wire benchmark samples from outside its processes while they stream (``bench/wire_to_wire.py``):
unread bytes on the client's socket and unsent bytes on the gateway's, and each process's use of and wait for a CPU."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any


class BacklogSampler(threading.Thread):
    """Samples /proc/net/tcp every ``every_s``: the client's unread bytes (rx_queue of the socket whose remote port
    is the gateway's) and the gateway's unsent/unacked bytes (tx_queue of the socket on the gateway port)."""

    def __init__(self, port: int, every_s: float = 0.01, pids: dict[str, int] | None = None) -> None:
        super().__init__(daemon=True)
        self.port = f"{port:04X}"
        self.every_s = every_s
        self.samples: list[tuple[int, int, int]] = []  # (perf_counter_ns, client rx_queue, gateway tx_queue)
        # the main threads' scheduler figures (/proc/<pid>/schedstat: ns on a CPU, ns runnable but waiting for one):
        # on 2 cores the engine, the gateway and this sampler share them, and a wait for a core is latency too
        self.pids = pids or {}
        self.cpu: list[tuple[int, dict[str, tuple[int, int, int]]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rx = tx = 0
            try:
                for path in ("/proc/net/tcp", "/proc/net/tcp6"):
                    with open(path) as fh:
                        next(fh)
                        for line in fh:
                            f = line.split()
                            if f[3] != "01":
                                continue
                            txq, rxq = (int(x, 16) for x in f[4].split(":"))
                            if f[2].endswith(":" + self.port):
                                rx = max(rx, rxq)
                            elif f[1].endswith(":" + self.port):
                                tx = max(tx, txq)
            except OSError:
                pass
            now = time.perf_counter_ns()
            self.samples.append((now, rx, tx))
            sched: dict[str, tuple[int, int, int]] = {}
            for name, pid in self.pids.items():
                try:
                    run_ns, wait_ns, runs = (int(x) for x in Path(f"/proc/{pid}/schedstat").read_text().split())
                    sched[name] = (run_ns, wait_ns, runs)
                except (OSError, ValueError):
                    pass
            self.cpu.append((now, sched))
            time.sleep(self.every_s)


def wait_quiet(sampler: BacklogSampler, client: subprocess.Popen[Any], quiet_s: float, timeout: float = 600) -> float:
    """Wait until the client has read everything the gateway sent (its rx_queue 0 for ``quiet_s``): the start-up
    traffic (entries' fills, account updates) is behind it before the stream starts.  Returns how long it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if client.poll() is not None:
            raise RuntimeError(f"the client exited ({client.returncode}) while settling")
        recent = [s for s in sampler.samples if s[0] >= time.perf_counter_ns() - int(quiet_s * 1e9)]
        if time.monotonic() - t0 > quiet_s and recent and all(s[1] == 0 for s in recent):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"the client still had unread bytes after {timeout:.0f} s")


def cpu_use(cpu: list[tuple[int, dict[str, tuple[int, int, int]]]], t0: int, t1: int) -> dict[str, dict[str, float]]:
    """Per process, over [t0, t1]: its main thread's share of a core, how long per second it was runnable but not
    running, and how often it was put on a CPU (each wake-up by a message is one) - so the wait per wake-up: the
    scheduler's latency, which every message pays before any code of the process runs."""
    inside = [c for c in cpu if t0 <= c[0] <= t1]
    if len(inside) < 2:
        return {}
    (a_t, a), (b_t, b) = inside[0], inside[-1]
    span = (b_t - a_t) / 1e9
    out = {}
    for name in a:
        if name in b:
            runs = max(1, b[name][2] - a[name][2])
            out[name] = {"core_share": round((b[name][0] - a[name][0]) / 1e9 / span, 3),
                         "runqueue_wait_ms_per_s": round((b[name][1] - a[name][1]) / 1e6 / span, 2),
                         "runs_per_s": round(runs / span),
                         "wait_us_per_run": round((b[name][1] - a[name][1]) / 1e3 / runs, 1)}
    return out
