"""How long this machine takes to wake a process that waits on a socket: the part of every wire-to-wire figure that
belongs to the machine, not to any client.

Why: in ``bench/wire_to_wire.py`` each exit needs at least two wake-ups of a waiting process - the client woken by
the crossing quote, the gateway woken by the exit order - and each is paid again whenever a CPU is busy or asleep.
On a virtual machine an idle virtual CPU is a thread the host has to schedule again, and that can take milliseconds
(a session's VM: one-byte round trips between two processes with 10 ms of quiet before each, p99 ~1 ms and max
~5 ms, while the same round trip back to back took 20-40 us).  The bare ib_async floor pays it too, so a p99 far
above this machine's wake-up p99 is the client's, one near it is the machine's.

The measure: a one-byte round trip over a socket pair between this process and a child that echoes, each on a CPU
of its own when there are two, after ``gap_s`` of quiet before each (the other side is asleep in ``recv``).

    python bench/machine_wakeup.py [--n 1500] [--gap 0.001]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from typing import Any


def measure(n: int = 1500, gap_s: float = 0.001, cpus: tuple[int, int] | None = None) -> dict[str, Any]:
    """``n`` round trips after ``gap_s`` each: their p50 / p99 / p99.9 / max in microseconds, and the CPUs used
    (``cpus``: this process's and the echo's; default, the first two this process may use)."""
    mine, theirs = socket.socketpair()
    if cpus is None:
        allowed = sorted(os.sched_getaffinity(0))
        cpus = (allowed[0], allowed[1]) if len(allowed) > 1 else (allowed[0], allowed[0])
    here, there = cpus
    child = subprocess.Popen([sys.executable, __file__, "--echo", str(theirs.fileno()), "--cpu", str(there)],
                             pass_fds=(theirs.fileno(),))
    theirs.close()
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {here})
    try:
        mine.send(b"?")  # the child is up and echoing before the first timed trip
        mine.recv(1)
        trips = []
        clock = time.perf_counter_ns
        for _ in range(n):
            time.sleep(gap_s)
            t0 = clock()
            mine.send(b"x")
            mine.recv(1)
            trips.append(clock() - t0)
    finally:
        os.sched_setaffinity(0, saved)
        mine.close()
        child.wait(10)
    trips.sort()

    def pct(p: float) -> float:
        return round(trips[min(len(trips) - 1, int(p * len(trips)))] / 1e3, 1)

    return {"n": n, "gap_s": gap_s, "cpus": [here, there], "p50_us": pct(0.5), "p99_us": pct(0.99),
            "p999_us": pct(0.999), "max_us": round(trips[-1] / 1e3, 1)}


def describe(m: dict[str, Any]) -> str:
    return (f"wake-up round trip between two processes on CPUs {m['cpus'][0]} and {m['cpus'][1]}, "
            f"{m['gap_s'] * 1e3:g} ms quiet before each ({m['n']}): p50 {m['p50_us']:.0f} us, p99 {m['p99_us']:.0f} "
            f"us, p99.9 {m['p999_us']:.0f} us, max {m['max_us']:.0f} us")


def echo(fd: int, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    sock = socket.socket(fileno=fd)
    while data := sock.recv(64):
        sock.send(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--gap", type=float, default=0.001, help="seconds of quiet before each round trip")
    p.add_argument("--echo", type=int, help=argparse.SUPPRESS)  # the child: echo on this socket's file descriptor
    p.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo is not None:
        echo(args.echo, args.cpu)
        return
    print(describe(measure(args.n, args.gap)))


if __name__ == "__main__":
    main()
