"""``tickguard sim`` serves ``GET /metrics`` as a user would run it: on the configured address, parseable, robust
to hostile requests; an address in use is an error line and the run goes on; ``enabled = false`` serves nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tickguard.config import load

TG = [sys.executable, "-m", "tickguard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sim(port: int | None, *args: str, enabled: bool = True) -> subprocess.Popen:
    env = dict(os.environ, TICKGUARD_METRICS__ENABLED=str(enabled).lower())
    if port is not None:
        env["TICKGUARD_METRICS__ADDRESS"] = f"127.0.0.1:{port}"
    return subprocess.Popen([*TG, "sim", "--no-live", "--symbols", "3", "--trades", "6", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


def first_scrape(port: int, proc: subprocess.Popen, deadline_s: float = 30.0) -> tuple[int, str, str]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            return get(f"http://127.0.0.1:{port}/metrics")
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the metrics endpoint never answered")


def raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_running_sim_serves_parseable_metrics_and_survives_hostile_requests():
    port = free_port()
    proc = sim(port, "--speed", "30", "--duration", "120")
    try:
        status, content_type, body = first_scrape(port, proc)
        assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"tickguard_trades", "tickguard_ticks_received", "tickguard_engine_info"} <= names
        # hostile and odd requests: each gets an HTTP error, none takes the server (or the engine) down
        for hostile in (b"\x00\xff garbage\r\n\r\n",
                        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"):
            answer = raw(port, hostile)
            assert answer == b"" or answer.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), answer[:80]
        assert get(f"http://127.0.0.1:{port}/../../etc/passwd")[0] == 404
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("POST was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 405
        openmetrics = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                             headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(openmetrics, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert r.read().decode().rstrip().endswith("# EOF")
        status, _, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "tickguard_engine_steps_total" in body
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert f"metrics at http://127.0.0.1:{port}/metrics" in err


def test_an_address_in_use_is_an_error_line_and_the_run_goes_on():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = sim(port, "--speed", "0", "--duration", "300")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"metrics NOT served: cannot listen on 127.0.0.1:{port}" in err, err
    assert "Traceback" not in err
    assert "tickguard sim - summary" in out


def test_disabled_metrics_serve_nothing():
    port = free_port()
    proc = sim(port, "--speed", "0", "--duration", "300", enabled=False)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "metrics at" not in err


def test_a_broken_address_is_refused_with_the_reason(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[metrics]\naddress = "localhost"\n')
    done = subprocess.run([*TG, "config", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "metrics.address" in done.stderr + done.stdout and "host:port" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert load(None, {"metrics": {"address": ":0"}}).metrics.host_port == ("127.0.0.1", 0)
