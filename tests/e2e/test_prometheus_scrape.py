"""A real Prometheus server (Debian's package) scrapes a running ``tickguard sim``, and a PromQL query returns the
active-trade count - the same figure the engine serves."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

TG = [sys.executable, "-m", "tickguard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def needs(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("TICKGUARD_REQUIRE_PROMETHEUS"):
            pytest.fail(f"{tool} is not installed (Debian package prometheus; ./dev test installs it)")
        pytest.skip(f"{tool} is not installed (Debian package prometheus; ./dev test installs it)")
    return path


def query(prom_port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def engine_value(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))


def test_prometheus_scrapes_a_running_sim_and_answers_the_active_trade_count(tmp_path: Path):
    prometheus = needs("prometheus")
    port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tickguard
    static_configs:
      - targets: ["127.0.0.1:{port}"]
""")
    env = dict(os.environ, TICKGUARD_METRICS__ENABLED="true", TICKGUARD_METRICS__ADDRESS=f"127.0.0.1:{port}")
    # 12 trades open one a virtual second from 5 s on; at 20x they are all open within the first wall second or so,
    # and the run lasts a wall minute at most (it is stopped as soon as the query has answered)
    engine = subprocess.Popen([*TG, "sim", "--no-live", "--symbols", "4", "--trades", "12", "--speed", "20",
                               "--duration", "1200"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    server = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        result: list[dict] = []
        while time.monotonic() < deadline:
            assert engine.poll() is None, engine.communicate()[1]
            assert server.poll() is None, server.communicate()[1]
            try:
                result = query(prom_port, 'sum(tickguard_trades{job="tickguard"})')
                up = query(prom_port, 'up{job="tickguard"}')
            except OSError:
                result = []
            if result and up and up[0]["value"][1] == "1" and float(result[0]["value"][1]) > 0:
                break
            time.sleep(0.2)
        assert result, "Prometheus never returned the active-trade count"
        active = float(result[0]["value"][1])
        assert active > 0
        # the engine's own figure, read right after, is of the same run: trades open one per virtual second and
        # close on their levels, so the two differ by what changed between the scrape and now - a few at most
        assert abs(engine_value(port, "tickguard_trades") - active) <= 12
        states = {r["metric"]["state"] for r in query(prom_port, 'tickguard_trades{job="tickguard"}')}
        assert states == {"pending_entry", "open", "exiting", "halted"}
    finally:
        for proc in (engine, server):
            proc.terminate()
        _, err = engine.communicate(timeout=60)
        server.communicate(timeout=60)
    assert engine.returncode == 0, err
    assert "Traceback" not in err
