"""Every command and option of ``tickguard`` with bad values (issue 12, point 3): a bad argument, a bad config, an
unreachable or busy port, a foreign or locked journal, a wrong database URL must end with a non-zero exit code and
one clear message naming what was wrong - never a Python traceback.

Two halves: a table of hand-picked bad inputs, each with the words its message must contain, and Hypothesis, which
drives every option of every command (found on the Typer app itself, so a new option cannot go unfuzzed) with
generated text, integers and floats and fails on any exception other than ``SystemExit``.  Most runs are
in-process (``CliRunner``, fast); a few are real processes, where typer prints an uncaught exception as a rich
traceback on the console.

Nothing here can run long: ``sim`` always gets ``--speed 0`` and a few virtual seconds unless the case is about
those options (and then only values that cannot make a long run); ``run`` and ``doctor`` only see configs whose
``[ib]`` port is closed or silent, with one connection attempt of one second; ``fake-gateway`` (which serves
forever) is only given values it must refuse - in-process its ``start`` is replaced by one that fails the test
the moment it listens, and as a process it is killed as soon as it says it listens or after a deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer.main
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tickguard
from ibfake.server import FakeGateway
from tickguard.config import reference_markdown
from tickguard.interfaces.cli import app
from tickguard.store.journal import Journal

TG = [sys.executable, "-m", "tickguard"]
SRC = str(Path(tickguard.__file__).parents[1])  # tracebacks are summarised by their frames in tickguard and ibfake
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None, print_blob=False,
                phases=(Phase.explicit, Phase.generate),  # no shrinking: a failing example is printed as drawn
                suppress_health_check=list(HealthCheck))
REFERENCE_KEYS = [line.split("`")[1] for line in reference_markdown().splitlines()[2:]]


# --------------------------------------------------------------------------------------------------- the world


def _free_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class World(dict):
    """Paths and ports of the bad inputs, by name; ``fmt`` fills them into an argument list."""

    def __repr__(self) -> str:
        return f"World({self['d']})"

    def fmt(self, args: tuple[str, ...]) -> list[str]:
        return [a.format(**self) for a in args]


def _write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def _journal(path: Path, kind: str) -> str:
    journal = Journal.open(str(path))
    journal.claim(kind)
    journal.close()
    return str(path)


TRADE = 'symbol = "SIM001"\nside = "long"\nqty = {qty}\nrules = [{{kind = "{kind}", distance = 1.0}}]\n'


def _ib(port: int, journal: str | None, host: str = "127.0.0.1", extra: str = "") -> str:
    """A run config: one connection attempt of one second to ``host:port`` (closed or silent)."""
    text = (f'[ib]\nhost = "{host}"\nport = {port}\nconnect_attempts = 1\nconnect_timeout_s = 1\n'
            f'account = "DU0000001"\n')
    if journal is not None:
        text += f"[journal]\n{journal}\n"
    return text + extra


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Every bad file, journal, config and port the table and the fuzzers use; the working directory is a temporary
    one meanwhile, so generated relative paths (reports, journals) land there."""
    d = tmp_path_factory.mktemp("cli_fuzz")
    old_cwd = Path.cwd()
    os.chdir(d)
    silent = socket.socket()  # listens (the kernel completes the handshake) but never answers: a busy port
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    world = World(d=str(d), closed=_free_port(), silent=silent.getsockname()[1])
    (d / "a_dir").mkdir()
    world["dir"] = str(d / "a_dir")
    world["missing"] = str(d / "missing.toml")
    world["nodir_journal"] = str(d / "no" / "such" / "dir" / "j.db")
    (d / "loop").symlink_to(d / "loop")
    world["loop"] = str(d / "loop")
    files = {
        "bin_toml": b"\x00\xff\xfe\x80 garbage \x01\x02\xc3\x28",
        "not_toml": "x = \n[sim\n",
        "wrong_type": '[sim]\nsymbols = "five"\n',
        "unknown_key": "[sim]\nsymbolz = 3\n",
        "unknown_section": "[simulation]\nseed = 3\n",
        "neg_qty": "[[trades]]\n" + TRADE.format(qty=-5, kind="stop_loss"),
        "nan_qty": "[[trades]]\n" + TRADE.format(qty="nan", kind="stop_loss"),
        "unknown_rule": "[[trades]]\n" + TRADE.format(qty=5, kind="teleport"),
        "no_rules": '[[trades]]\nsymbol = "SIM001"\nside = "long"\nqty = 5\nrules = []\n',
        "mysql_url": '[journal]\nurl = "mysql://u@127.0.0.1:1/db"\n',
        "sync_off": '[journal]\nsqlite_synchronous = "OFF"\n',
        "log_loud": '[log]\nlevel = "LOUD"\n',
        "inf_duration": "[sim]\nduration_s = inf\n",
        "inf_batch_window": "[engine]\nbatch_window_ms = inf\n",
        "huge_ack_timeout": "[engine]\nack_timeout_s = 1e300\n",
        "huge_history_days": "[volatility]\nhistory_days = 9223372036854775807\n",
        "inf_tick_rate": "[sim.market]\nbase_tick_rate = inf\n",
        "inf_vol": "[sim.market]\nvol_multiplier = inf\n",
        "inf_gaps": "[sim.market]\ngaps_per_hour = inf\n",
        "unreadable": "[sim]\nseed = 1\n",
        "valid_trades": "[sim]\nsymbols = 2\n[[trades]]\n" + TRADE.format(qty=10, kind="stop_loss"),
        "notdb": "this is not a database, just text " * 40,
        "empty_db": "",
    }
    for name, text in files.items():
        world[name] = _write(d / f"{name}{'.db' if name in ('notdb', 'empty_db') else '.toml'}", text)
    os.chmod(world["unreadable"], 0)
    conn = sqlite3.connect(d / "foreign.db")
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    world["foreign"] = str(d / "foreign.db")
    world["live_journal"] = _journal(d / "live.db", "live")
    world["sim_journal"] = _journal(d / "sim.db", "simulated")
    world["log_dir"] = _write(d / "log_dir.toml", _ib(world["closed"], f'path = "{d / "log_dir.db"}"',
                                                      extra=f'[log]\nfile = "{world["dir"]}"\n'))
    configs = {
        "run_closed": _ib(world["closed"], f'path = "{d / "run.db"}"'),
        "run_silent": _ib(world["silent"], f'path = "{d / "run_silent.db"}"'),
        "run_badhost": _ib(world["closed"], f'path = "{d / "run_badhost.db"}"', host="no.such.host.invalid"),
        "run_no_journal": _ib(world["closed"], None),
        "run_notdb": _ib(world["closed"], f'path = "{world["notdb"]}"'),
        "run_foreign": _ib(world["closed"], f'path = "{world["foreign"]}"'),
        "run_sim_journal": _ib(world["closed"], f'path = "{world["sim_journal"]}"'),
        "run_pg_down": _ib(world["closed"], 'url = "postgres://nobody@127.0.0.1:1/x"'),
        "run_sqlite_url": _ib(world["closed"], f'url = "sqlite:///{d / "x.db"}"'),
        "run_port_70000": _ib(70000, f'path = "{d / "run.db"}"'),
        "cfg_notdb": f'[journal]\npath = "{world["notdb"]}"\n',
    }
    for name, text in configs.items():
        world[name] = _write(d / f"{name}.toml", text)
    yield world
    silent.close()
    os.chdir(old_cwd)


@pytest.fixture(autouse=True)
def _restore_logging():
    """Commands install tickguard's log handler and levels: put the process's logging back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))


# ------------------------------------------------------------------------------------------------- the checks


class GatewayStarted(AssertionError):
    """fake-gateway listened although its arguments were bad."""


_REAL_START = FakeGateway.start


async def _start_then_fail(self: FakeGateway) -> FakeGateway:
    await _REAL_START(self)
    where = f"{self.host}:{self.port}"
    await self.close()
    raise GatewayStarted(f"fake-gateway accepted its arguments and listened on {where} - it should have refused")


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    exception: BaseException | None = None
    how: str = "in-process"
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        tb = ""
        if self.exception is not None and not isinstance(self.exception, SystemExit):
            frames = traceback.extract_tb(self.exception.__traceback__)
            mine = [f for f in frames if f.filename.startswith(SRC)]
            shown = [*mine[-4:], *([frames[-1]] if frames and frames[-1] not in mine[-4:] else [])]
            tb = "raised: " + "".join(f"\n  {f.filename}:{f.lineno} in {f.name}" for f in shown) + \
                 f"\n{type(self.exception).__module__}.{type(self.exception).__qualname__}: {self.exception}"
        env = "".join(f"{k}={v!r} " for k, v in self.env.items())
        return (f"\n$ {env}tickguard {' '.join(repr(a) if not a or ' ' in a else a for a in self.args)}  ({self.how})\n"
                f"exit code {self.code}\n--- stderr ---\n{self.stderr[-1500:]}\n--- stdout ---\n"
                f"{self.stdout[-800:]}\n{tb}")


def invoke(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """The command in this process; fake-gateway may never get to serve."""
    with mock.patch.object(FakeGateway, "start", _start_then_fail):
        result = CliRunner().invoke(app, args, env=env)
    return Outcome(result.exit_code, result.stdout, result.stderr, result.exception, args=args, env=env or {})


class Spawned:
    """``tickguard ARGS`` as a user runs it, started at once and read in the background: killed when it says it
    listens (``stop_on_listen``, for fake-gateway, which must refuse before that) or at its deadline.  Several run
    side by side, so a process that hangs costs its deadline once, not once per case."""

    def __init__(self, args: list[str], deadline_s: float = 60.0, stop_on_listen: bool = False) -> None:
        self.args, self.deadline_s, self.killed = args, deadline_s, ""
        self.proc = subprocess.Popen([*TG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, stop_on_listen)),
                      threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, False))]
        self.timer = threading.Timer(deadline_s, self._kill, args=(f"still running after {deadline_s:g} s",))
        for thread in (*self.pumps, self.timer):
            thread.daemon = True
            thread.start()

    def _pump(self, stream: Any, sink: list[bytes], stop_on_listen: bool) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line)
            if stop_on_listen and b"listening on" in line:
                self._kill("it listened")

    def _kill(self, why: str) -> None:
        if self.proc.poll() is None:
            self.killed = why
            self.proc.kill()

    def outcome(self) -> Outcome:
        self.proc.wait()
        self.timer.cancel()
        for thread in self.pumps:
            thread.join(10)
        err = b"".join(self.err).decode(errors="replace") + (f"\n[{self.killed}: killed]" if self.killed else "")
        return Outcome(None if self.killed else self.proc.returncode, b"".join(self.out).decode(errors="replace"),
                       err, how="process", args=self.args)


def _check(ok: bool, what: str, o: Outcome) -> None:
    if not ok:
        pytest.fail(what + o.describe(), pytrace=False)


def assert_no_traceback(o: Outcome) -> None:
    _check(not isinstance(o.exception, GatewayStarted), "fake-gateway started with bad arguments", o)
    _check(o.exception is None or isinstance(o.exception, SystemExit), "an exception escaped", o)
    _check("Traceback" not in o.text, "a traceback was printed", o)


def assert_refused(o: Outcome, needles: tuple[Any, ...], *, one: bool = True,
                   absent: tuple[str, ...] = ()) -> None:
    """Refused: no traceback, a non-zero exit, and a message that names the bad thing (each needle, or one of a
    tuple of alternatives, case-insensitive).  ``one``: the message is all there is on stderr - no log line or
    library echo before it."""
    assert_no_traceback(o)
    _check(o.code is not None, "did not end", o)
    _check(o.code != 0, "exit code 0 for a bad input", o)
    message = (o.stderr if one else o.text).strip()
    _check(bool(message), "no message", o)
    for needle in needles:
        options = needle if isinstance(needle, tuple) else (needle,)
        _check(any(n.lower() in message.lower() for n in options),
               f"the message does not name {' or '.join(map(repr, options))}", o)
    if one:
        _check(message.lower().startswith(("error:", "usage:")), "more than one message on stderr", o)
    for secret in absent:
        _check(secret not in o.text, f"{secret!r} was printed", o)


# ---------------------------------------------------------------------------------------------------- the table

SHORT = ("--speed", "0", "--duration", "5", "--no-live")  # a sim that takes a fraction of a second
DURATION = ("--duration", "sim.duration_s")
CONFIG_FILE = [  # (id, --config value, needles): refused the same way by every command that reads a config
    ("missing", "{missing}", ("{missing}", "not exist")),
    ("directory", "{dir}", ("{dir}", "directory")),
    ("empty-path", "", (("--config", "''", "empty"),)),
    ("symlink-loop", "{loop}", ("{loop}",)),
    ("binary", "{bin_toml}", ("{bin_toml}", ("TOML", "UTF-8", "text", "binary"))),
    ("bad-syntax", "{not_toml}", ("{not_toml}", "TOML")),
    ("unknown-section", "{unknown_section}", ("simulation",)),
]
CASES: list[tuple[str, tuple[str, ...], tuple[Any, ...]]] = [
    # ----- sim: numbers
    ("sim-symbols-0", ("sim", "--symbols", "0", *SHORT), (("--symbols", "sim.symbols"),)),
    ("sim-symbols-neg", ("sim", "--symbols", "-1", *SHORT), (("--symbols", "sim.symbols"),)),
    ("sim-symbols-huge", ("sim", "--symbols", "99999999999999999999999", *SHORT), (("--symbols", "sim.symbols"),)),
    ("sim-symbols-text", ("sim", "--symbols", "abc", *SHORT), ("--symbols",)),
    ("sim-symbols-empty", ("sim", "--symbols", "", *SHORT), ("--symbols",)),
    ("sim-symbols-commas", ("sim", "--symbols", ",,,", *SHORT), ("--symbols",)),
    ("sim-symbols-float", ("sim", "--symbols", "2.5", *SHORT), ("--symbols",)),
    ("sim-duration-0", ("sim", "--speed", "0", "--duration", "0", "--no-live"), (DURATION,)),
    ("sim-duration-neg", ("sim", "--speed", "0", "--duration", "-5", "--no-live"), (DURATION,)),
    ("sim-duration-nan", ("sim", "--speed", "0", "--duration", "nan", "--no-live"), (DURATION,)),
    ("sim-duration-inf", ("sim", "--speed", "0", "--duration", "inf", "--no-live"), (DURATION,)),
    ("sim-duration-text", ("sim", "--speed", "0", "--duration", "ten", "--no-live"), ("--duration",)),
    ("sim-speed-neg", ("sim", "--speed", "-1", "--duration", "5", "--no-live"), (("--speed", "sim.speed"),)),
    ("sim-speed-nan", ("sim", "--speed", "nan", "--duration", "5", "--no-live"), (("--speed", "sim.speed"),)),
    ("sim-speed-text", ("sim", "--speed", "fast", "--duration", "5", "--no-live"), ("--speed",)),
    ("sim-trades-neg", ("sim", "--trades", "-1", *SHORT), (("--trades", "sim.trades"),)),
    ("sim-trades-float", ("sim", "--trades", "1.5", *SHORT), ("--trades",)),
    ("sim-seed-neg", ("sim", "--seed", "-1", *SHORT), (("--seed", "sim.seed"),)),
    ("sim-seed-text", ("sim", "--seed", "abc", *SHORT), ("--seed",)),
    # ----- sim: config files
    *[(f"sim-config-{i}", ("sim", "--config", v, *SHORT), n) for i, v, n in CONFIG_FILE],
    ("sim-config-wrong-type", ("sim", "-c", "{wrong_type}", *SHORT), ("sim.symbols",)),
    ("sim-config-unknown-key", ("sim", "-c", "{unknown_key}", *SHORT), ("sim.symbolz",)),
    ("sim-config-neg-qty", ("sim", "-c", "{neg_qty}", *SHORT), ("trades.0.qty",)),
    ("sim-config-nan-qty", ("sim", "-c", "{nan_qty}", *SHORT), ("trades.0.qty",)),
    ("sim-config-unknown-rule", ("sim", "-c", "{unknown_rule}", *SHORT), ("trades.0.rules", "teleport")),
    ("sim-config-no-rules", ("sim", "-c", "{no_rules}", *SHORT), ("trades.0.rules",)),
    ("sim-config-log-file-is-dir", ("sim", "-c", "{log_dir}", *SHORT), ("[log] file", "{dir}")),
    ("sim-config-log-level", ("sim", "-c", "{log_loud}", *SHORT), ("log.level", "LOUD")),
    ("sim-config-inf-duration", ("sim", "-c", "{inf_duration}", "--speed", "0", "--no-live"), ("sim.duration_s",)),
    ("sim-config-inf-batch-window", ("sim", "-c", "{inf_batch_window}", *SHORT), ("engine.batch_window_ms",)),
    ("sim-config-huge-ack-timeout", ("sim", "-c", "{huge_ack_timeout}", *SHORT), ("engine.ack_timeout_s",)),
    ("sim-config-huge-history", ("sim", "-c", "{huge_history_days}", *SHORT), ("volatility.history_days",)),
    ("sim-config-inf-tick-rate", ("sim", "-c", "{inf_tick_rate}", *SHORT), ("sim.market.base_tick_rate",)),
    ("sim-config-inf-vol", ("sim", "-c", "{inf_vol}", *SHORT), ("sim.market.vol_multiplier",)),
    # ----- sim: journals, reports, logs
    ("sim-journal-notdb", ("sim", "--journal", "{notdb}", *SHORT), ("{notdb}",)),
    ("sim-journal-empty-file", ("sim", "--journal", "{empty_db}", *SHORT), ("{empty_db}",)),
    ("sim-journal-foreign", ("sim", "--journal", "{foreign}", *SHORT), ("{foreign}",)),
    ("sim-journal-live", ("sim", "--journal", "{live_journal}", *SHORT), ("{live_journal}", "live")),
    ("sim-journal-dir", ("sim", "--journal", "{dir}", *SHORT), ("{dir}",)),
    ("sim-journal-no-parent", ("sim", "--journal", "{nodir_journal}", *SHORT), ("does not exist",)),
    ("sim-journal-empty-path", ("sim", "--journal", "", *SHORT), (("--journal", "''", "empty"),)),
    ("sim-report-dir", ("sim", "--report", "{dir}", *SHORT), ("{dir}",)),
    ("sim-report-empty-path", ("sim", "--report", "", *SHORT), (("--report", "''", "empty"),)),
    ("sim-log-format", ("sim", "--log-format", "xml", *SHORT), ("--log-format", "xml")),
    ("sim-log-level", ("sim", "--log-level", "LOUD", *SHORT), ("--log-level", "LOUD")),
    ("sim-log-level-empty", ("sim", "--log-level", "", *SHORT), ("--log-level",)),
    ("sim-log-level-no-name", ("sim", "--log-level", "=DEBUG", *SHORT), ("component",)),
    ("sim-log-level-component", ("sim", "--log-level", "adapters.ib=LOUD", *SHORT), ("LOUD",)),
    ("sim-unknown-option", ("sim", "--bogus", *SHORT), ("--bogus",)),
    ("sim-live-takes-no-value", ("sim", "--live=yes", *SHORT), ("--live",)),
    # ----- run
    ("run-no-config", ("run", "--no-live"), ("--config",)),
    *[(f"run-config-{i}", ("run", "--config", v, "--no-live"), n) for i, v, n in CONFIG_FILE],
    ("run-no-journal", ("run", "-c", "{run_no_journal}", "--no-live"), ("[journal]",)),
    ("run-closed-port", ("run", "-c", "{run_closed}", "--no-live"),
     ("127.0.0.1:{closed}", ("[ib]", "TWS", "Gateway"))),
    ("run-silent-port", ("run", "-c", "{run_silent}", "--no-live"),
     ("127.0.0.1:{silent}", ("[ib]", "TWS", "Gateway"))),
    ("run-unknown-host", ("run", "-c", "{run_badhost}", "--no-live"), ("no.such.host.invalid",)),
    ("run-port-70000", ("run", "-c", "{run_port_70000}", "--no-live"), ("ib.port",)),
    ("run-journal-notdb", ("run", "-c", "{run_notdb}", "--no-live"), ("{notdb}",)),
    ("run-journal-foreign", ("run", "-c", "{run_foreign}", "--no-live"), ("{foreign}",)),
    ("run-journal-simulated", ("run", "-c", "{run_sim_journal}", "--no-live"), ("{sim_journal}", "simulated")),
    ("run-journal-pg-unreachable", ("run", "-c", "{run_pg_down}", "--no-live"), ("journal", "127.0.0.1")),
    ("run-journal-sqlite-url", ("run", "-c", "{run_sqlite_url}", "--no-live"), ("journal.url", "sqlite")),
    ("run-journal-mysql-url", ("run", "-c", "{mysql_url}", "--no-live"), ("journal.url", "mysql")),
    ("run-log-file-is-dir", ("run", "-c", "{log_dir}", "--no-live"), ("[log] file", "{dir}")),
    ("run-duration-nan", ("run", "-c", "{run_closed}", "--no-live", "--duration", "nan"), ("--duration",)),
    ("run-duration-inf", ("run", "-c", "{run_closed}", "--no-live", "--duration", "inf"), ("--duration",)),
    ("run-duration-neg", ("run", "-c", "{run_closed}", "--no-live", "--duration", "-1"), ("--duration",)),
    ("run-duration-text", ("run", "-c", "{run_closed}", "--no-live", "--duration", "x"), ("--duration",)),
    ("run-log-format", ("run", "-c", "{run_closed}", "--no-live", "--log-format", "yaml"), ("--log-format",)),
    ("run-log-level", ("run", "-c", "{run_closed}", "--no-live", "--log-level", "LOUD"), ("LOUD",)),
    # ----- fake-gateway (in-process: it fails the test if it ever listens)
    ("gw-port-neg", ("fake-gateway", "--port", "-1"), ("--port",)),
    ("gw-port-65536", ("fake-gateway", "--port", "65536"), ("--port",)),
    ("gw-port-text", ("fake-gateway", "--port", "http"), ("--port",)),
    ("gw-port-empty", ("fake-gateway", "--port", ""), ("--port",)),
    ("gw-port-busy", ("fake-gateway", "--port", "{silent}"), ("{silent}", ("in use", "busy"))),
    ("gw-host-unknown", ("fake-gateway", "--port", "0", "--host", "no.such.host.invalid"), ("no.such.host.invalid",)),
    ("gw-host-foreign", ("fake-gateway", "--port", "0", "--host", "192.0.2.1"), ("192.0.2.1",)),
    ("gw-host-empty", ("fake-gateway", "--port", "0", "--host", ""), ("--host",)),
    ("gw-symbols-0", ("fake-gateway", "--port", "0", "--symbols", "0"), ("--symbols",)),
    ("gw-symbols-neg", ("fake-gateway", "--port", "0", "--symbols", "-1"), ("--symbols",)),
    ("gw-symbols-empty", ("fake-gateway", "--port", "0", "--symbols", ""), ("--symbols",)),
    ("gw-symbols-commas", ("fake-gateway", "--port", "0", "--symbols", ",,,"), ("--symbols",)),
    ("gw-symbols-hole", ("fake-gateway", "--port", "0", "--symbols", "AAA,,BBB"), ("--symbols",)),
    ("gw-speed-neg", ("fake-gateway", "--port", "0", "--speed", "-1"), ("--speed",)),
    ("gw-speed-nan", ("fake-gateway", "--port", "0", "--speed", "nan"), ("--speed",)),
    ("gw-speed-inf", ("fake-gateway", "--port", "0", "--speed", "inf"), ("--speed",)),
    ("gw-fill-delay-neg", ("fake-gateway", "--port", "0", "--fill-delay", "-1"), ("--fill-delay",)),
    ("gw-fill-delay-nan", ("fake-gateway", "--port", "0", "--fill-delay", "nan"), ("--fill-delay",)),
    ("gw-fill-delay-inf", ("fake-gateway", "--port", "0", "--fill-delay", "inf"), ("--fill-delay",)),
    ("gw-master-client-neg", ("fake-gateway", "--port", "0", "--master-client-id", "-1"), ("--master-client-id",)),
    ("gw-master-client-text", ("fake-gateway", "--port", "0", "--master-client-id", "me"), ("--master-client-id",)),
    ("gw-partial-fill-2", ("fake-gateway", "--port", "0", "--partial-fill-prob", "2"), ("--partial-fill-prob",)),
    ("gw-partial-fill-neg", ("fake-gateway", "--port", "0", "--partial-fill-prob", "-0.5"), ("--partial-fill-prob",)),
    ("gw-partial-fill-nan", ("fake-gateway", "--port", "0", "--partial-fill-prob", "nan"), ("--partial-fill-prob",)),
    ("gw-seed-neg", ("fake-gateway", "--port", "0", "--seed", "-1"), ("--seed",)),
    ("gw-seed-text", ("fake-gateway", "--port", "0", "--seed", "x"), ("--seed",)),
    # ----- trades
    ("trades-no-journal", ("trades",), ("--journal",)),
    ("trades-journal-empty-path", ("trades", "--journal", ""), ("--journal",)),
    ("trades-journal-missing", ("trades", "--journal", "{missing}"), ("{missing}",)),
    ("trades-journal-notdb", ("trades", "--journal", "{notdb}"), ("{notdb}",)),
    ("trades-journal-empty-file", ("trades", "--journal", "{empty_db}"), ("{empty_db}",)),
    ("trades-journal-foreign", ("trades", "--journal", "{foreign}"), ("{foreign}",)),
    ("trades-journal-dir", ("trades", "--journal", "{dir}"), ("{dir}",)),
    ("trades-journal-loop", ("trades", "--journal", "{loop}"), ("{loop}",)),
    ("trades-journal-mysql", ("trades", "--journal", "mysql://u@127.0.0.1:1/db"), ("mysql", "postgresql")),
    ("trades-journal-http", ("trades", "--journal", "http://127.0.0.1:1/x"), ("http", "postgresql")),
    ("trades-journal-postgres-scheme", ("trades", "--journal", "postgres://nobody@127.0.0.1:1/x"), ("127.0.0.1",)),
    ("trades-journal-not-a-url", ("trades", "--journal", "postgresql://"), ("postgresql://",)),
    ("trades-state-unknown", ("trades", "--journal", "{live_journal}", "--state", "bogus"), ("--state", "bogus")),
    *[(f"trades-config-{i}", ("trades", "--config", v), n) for i, v, n in CONFIG_FILE],
    ("trades-config-mysql", ("trades", "-c", "{mysql_url}"), ("journal.url",)),
    ("trades-config-notdb", ("trades", "-c", "{cfg_notdb}"), ("{notdb}",)),
    ("trades-config-pg-unreachable", ("trades", "-c", "{run_pg_down}"), ("127.0.0.1",)),
    ("trades-unknown-option", ("trades", "--journal", "{live_journal}", "--limit", "3"), ("--limit",)),
    # ----- config
    *[(f"config-{i}", ("config", "--config", v), n) for i, v, n in CONFIG_FILE],
    ("config-wrong-type", ("config", "-c", "{wrong_type}"), ("sim.symbols", "five")),
    ("config-unknown-key", ("config", "-c", "{unknown_key}"), ("sim.symbolz",)),
    ("config-neg-qty", ("config", "-c", "{neg_qty}"), ("trades.0.qty",)),
    ("config-unknown-rule", ("config", "-c", "{unknown_rule}"), ("teleport",)),
    ("config-mysql-url", ("config", "-c", "{mysql_url}"), ("journal.url", "mysql")),
    ("config-sqlite-sync", ("config", "-c", "{sync_off}"), ("journal.sqlite_synchronous",)),
    ("config-unknown-option", ("config", "--bogus"), ("--bogus",)),
    # ----- doctor (its checks are its report: non-zero, FAIL naming the problem, on stdout)
    ("doctor-no-config", ("doctor",), ("--config",)),
    *[(f"doctor-config-{i}", ("doctor", "--config", v), n) for i, v, n in CONFIG_FILE],
    ("doctor-log-file-is-dir", ("doctor", "-c", "{log_dir}"), ("[log] file", "{dir}")),
    # ----- the group
    ("unknown-command", ("bogus",), ("bogus",)),
]
ENV_CASES = [  # (id, environment, needles) for `tickguard config`
    ("env-seed-text", {"TICKGUARD_SIM__SEED": "abc"}, ("sim.seed",)),
    ("env-unknown-key", {"TICKGUARD_SIM__BOGUS": "1"}, ("sim.bogus",)),
    ("env-url-scheme", {"TICKGUARD_JOURNAL__URL": "mysql://u@h/db"}, ("journal.url",)),
    ("env-section-not-json", {"TICKGUARD_SIM": "notjson"}, (("TICKGUARD_SIM", "environment"),)),
    ("env-list-not-json", {"TICKGUARD_IB__SYMBOLS": "AAA,BBB"}, ("TICKGUARD_IB__SYMBOLS",)),
    ("env-trades-not-json", {"TICKGUARD_TRADES": "{{"}, ("TICKGUARD_TRADES",)),
]
DOCTOR_REPORTS = [  # (id, config, needles): doctor runs its checks and reports each failure on stdout
    ("closed-port", "{run_closed}", ("FAIL", "127.0.0.1:{closed}")),
    ("silent-port", "{run_silent}", ("FAIL", "127.0.0.1:{silent}")),
    ("no-journal", "{run_no_journal}", ("FAIL", "journal")),
    ("journal-notdb", "{run_notdb}", ("FAIL", "{notdb}")),
    ("journal-foreign", "{run_foreign}", ("FAIL", "{foreign}")),
    ("journal-simulated", "{run_sim_journal}", ("FAIL", "simulated")),
    ("journal-pg-unreachable", "{run_pg_down}", ("FAIL", "127.0.0.1:1")),
]


def _needles(w: World, needles: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(tuple(x.format(**w) for x in n) if isinstance(n, tuple) else n.format(**w) for n in needles)


@pytest.mark.parametrize(("args", "needles"), [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_a_bad_input_is_refused_with_a_message_naming_it(w, args, needles):
    assert_refused(invoke(w.fmt(args)), _needles(w, needles))


@pytest.mark.parametrize(("env", "needles"), [pytest.param(e, n, id=i) for i, e, n in ENV_CASES])
def test_a_bad_environment_variable_is_refused_naming_it(env, needles):
    assert_refused(invoke(["config"], env=env), needles)


@pytest.mark.parametrize(("config", "needles"), [pytest.param(c, n, id=i) for i, c, n in DOCTOR_REPORTS])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_doctor_reports_what_is_wrong(w, config, needles, as_json):
    o = invoke(["doctor", "-c", config.format(**w), *(["--json"] if as_json else [])])
    if as_json:
        assert_no_traceback(o)
        assert o.code != 0 and json.loads(o.stdout)["ok"] is False, o.describe()
        needles = tuple(n for n in needles if n != "FAIL")
    assert_refused(o, _needles(w, needles), one=False)


@pytest.mark.skipif(IS_ROOT, reason="root reads a file without read permission")
@pytest.mark.parametrize("command", ["sim", "run", "trades", "config", "doctor"])
def test_an_unreadable_config_is_refused_naming_it(w, command):
    assert_refused(invoke([command, "-c", w["unreadable"]]), (w["unreadable"], "permission"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_a_report_on_a_full_disk_is_refused_naming_it(w):
    assert_refused(invoke(["sim", "--report", "/dev/full", *SHORT]), ("/dev/full",))


def test_a_password_in_a_journal_url_is_never_printed():
    o = invoke(["trades", "--journal", "postgresql://nobody:s3cr3t-pw@127.0.0.1:1/x"])
    assert_refused(o, ("127.0.0.1",), absent=("s3cr3t-pw",))


def test_a_locked_journal_is_refused_naming_it(w):
    """Another process holds the SQLite journal's write lock: sim says so (after its busy timeout)."""
    path = Path(w["d"]) / "locked.db"
    _journal(path, "simulated")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        o = invoke(["sim", "--journal", str(path), *SHORT])
    finally:
        holder.close()
    assert_refused(o, (str(path), ("locked", "busy", "in use")))


# ------------------------------------------------------------------------------------ real processes (a handful)

SPAWNED = [  # (id, args, needles, seconds, must fail): started together, each checked as a user would see it
    ("sim-seed-neg", ("sim", "--seed", "-1", *SHORT), (("--seed", "sim.seed"),), 60, True),
    ("sim-symbols-0", ("sim", "--symbols", "0", *SHORT), ("sim.symbols",), 60, True),
    ("config-dir", ("config", "-c", "{dir}"), ("{dir}",), 60, True),
    ("config-binary", ("config", "-c", "{bin_toml}"), ("{bin_toml}",), 60, True),
    ("trades-mysql", ("trades", "--journal", "mysql://u@127.0.0.1:1/db"), ("mysql",), 60, True),
    ("run-closed-port", ("run", "-c", "{run_closed}", "--no-live"), ("127.0.0.1:{closed}", ("[ib]", "TWS")), 60, True),
    ("run-journal-simulated", ("run", "-c", "{run_sim_journal}", "--no-live"), ("simulated",), 60, True),
    # huge values: a 5-second sim (about a second alone) must end within 60 s, sharing 2 cores with the other 13
    # processes of this table, or refuse them
    ("sim-trades-huge", ("sim", "--trades", "1000000000", *SHORT), (("--trades", "sim.trades"),), 60, False),
    ("sim-config-inf-gaps", ("sim", "-c", "{inf_gaps}", *SHORT), ("sim.market.gaps_per_hour",), 60, False),
    # fake-gateway serves forever: each of these must end before it listens (it is killed the moment it does;
    # the deadline only bounds a process that neither refuses nor listens - 14 processes start at once on 2 cores)
    ("gw-busy-port", ("fake-gateway", "--port", "{silent}"), ("{silent}", ("in use", "busy")), 60, True),
    ("gw-symbols-0", ("fake-gateway", "--port", "0", "--symbols", "0"), ("--symbols",), 60, True),
    ("gw-symbols-huge", ("fake-gateway", "--port", "0", "--symbols", "99999999"), ("--symbols",), 60, True),
    ("gw-speed-inf", ("fake-gateway", "--port", "0", "--speed", "inf"), ("--speed",), 60, True),
    ("gw-host-unknown", ("fake-gateway", "--port", "0", "--host", "no.such.host.invalid"),
     ("no.such.host.invalid",), 60, True),
]


@pytest.fixture(scope="module")
def spawned(w):
    """Every process of SPAWNED, started together on first use, stopped at the end."""
    procs = {i: Spawned(w.fmt(args), seconds, stop_on_listen=args[0] == "fake-gateway")
             for i, args, _, seconds, _ in SPAWNED}
    yield procs
    for proc in procs.values():
        proc._kill("test over")


@pytest.mark.parametrize(("case", "needles", "must_fail"), [pytest.param(i, n, m, id=i) for i, _, n, _, m in SPAWNED])
def test_a_real_process_refuses_a_bad_input_without_a_traceback(w, spawned, case, needles, must_fail):
    o = spawned[case].outcome()
    if must_fail or o.code != 0:
        assert_refused(o, _needles(w, needles))
    assert_no_traceback(o)
    assert o.code is not None, f"did not end{o.describe()}"


@contextlib.contextmanager
def _gateway():
    """A real fake gateway (its own process, one symbol) on a free port, stopped afterwards."""
    proc = subprocess.Popen([*TG, "fake-gateway", "--port", "0", "--symbols", "AAA", "--speed", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line
        yield int(line.split("listening on 127.0.0.1:")[1].split()[0])
    finally:
        proc.terminate()
        proc.wait(10)


def test_run_refuses_a_bad_duration_even_when_the_gateway_answers(w):
    """With a gateway that answers, a bad --duration must still be refused by name (before trading), not crash the
    engine after it connected."""
    failures = []
    with _gateway() as port:
        d = Path(w["d"])
        cfg = _write(d / "reachable.toml", f'[ib]\nport = {port}\nclient_id = 31\naccount = "DU0000001"\n'
                                           f'connect_attempts = 1\n[journal]\npath = "{d / "reachable.db"}"\n')
        for value in ("nan", "inf", "-1"):
            try:
                assert_refused(invoke(["run", "-c", cfg, "--no-live", "--duration", value]), ("--duration",))
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


# ------------------------------------------------------------------------------------------------ the fuzzing

_NO_NUL = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
TEXT = st.text(_NO_NUL, max_size=16)
INTS = st.one_of(st.integers(-(10**25), 10**25), st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1]))
FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e-300, 1e300, math.inf, -math.inf, math.nan]))
ODD = st.sampled_from(["", " ", "nan", "inf", "-inf", "1e309", "0x10", "1_000", " 5 ", "--", "-", "\t", "None",
                       "true", "٣", "1,5", "½"])
VALUE = st.one_of(INTS.map(str), FLOATS.map(repr), ODD, TEXT)


def _paths(prefix: str) -> st.SearchStrategy[str]:
    """Relative paths without a directory part: they land in the temporary working directory.  ``sim`` creates
    journals and reports, so its paths have a prefix of their own (nothing it writes is read by another case)."""
    return TEXT.map(lambda s: prefix + s.replace("/", "_").replace("\\", "_"))


PATHISH = _paths("fz-")
URL = st.builds("{}://{}".format,
                st.one_of(st.sampled_from(["postgres", "postgresql", "postgresql+psycopg", "postgresql+asyncpg",
                                           "mysql", "sqlite", "http", "", "oracle", "mssql+pyodbc"]),
                          st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True)),
                st.one_of(st.sampled_from(["", "/", "nobody@127.0.0.1:1/x", "u:p@127.0.0.1:1/x", "127.0.0.1:1",
                                           "[::1]:1/x", "nobody@127.0.0.1:99999/x", "@/", "?host=/nonexistent"]),
                          PATHISH.map(lambda s: "nobody@127.0.0.1:1/" + s)))


def _parses(text: str, kind: type) -> float | None:
    """The value click would read from ``text`` for an int or float option, or None."""
    try:
        return kind(text)
    except (ValueError, OverflowError):
        return None


def _cheap(lo: float, hi: float, kind: type = float):
    """Values of an option outside [lo, hi] (valid but long-running ones are left to the table and other tests)."""
    def ok(text: str) -> bool:
        v = _parses(text, kind)
        return v is None or not (lo <= v <= hi)
    return VALUE.filter(ok)


def _opt(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return values.map(lambda v: [name, v])


def _flag(*names: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from([[n] for n in names])


def _pool(w: World, *names: str) -> st.SearchStrategy[str]:
    return st.sampled_from([w.get(n, n) for n in names])


CONFIG_POOL = ("missing", "dir", "", "loop", "bin_toml", "not_toml", "wrong_type", "unknown_key", "unknown_section",
               "neg_qty", "nan_qty", "unknown_rule", "no_rules", "mysql_url", "sync_off", "log_loud", "log_dir")
RUN_POOL = (*CONFIG_POOL, "run_closed", "run_no_journal", "run_notdb", "run_foreign", "run_sim_journal",
            "run_pg_down", "run_sqlite_url", "run_port_70000", "cfg_notdb")
JOURNAL_POOL = ("dir", "", "loop", "notdb", "empty_db", "foreign", "live_journal", "sim_journal",
                "nodir_journal", "bin_toml")


def option_strategies(w: World) -> dict[str, dict[str, st.SearchStrategy[list[str]]]]:
    """For every command, a strategy per option (its name as in ``--help``).  ``sim`` values that would make a
    long run are filtered out; ``fake-gateway`` only gets values it must refuse."""
    log = {"--log-format": _opt("--log-format", st.one_of(st.sampled_from(["text", "json", "xml", "JSON", ""]),
                                                         TEXT)),
           "--log-level": st.lists(st.one_of(st.sampled_from(["INFO", "warning", "=DEBUG", "x=", "adapters.ib=LOUD",
                                                              "..=INFO", " = ", "ib_async=ERROR=1"]), TEXT),
                                   min_size=1, max_size=3).map(lambda vs: [t for v in vs for t in ("--log-level", v)])}
    live = {"--live": _flag("--live", "--no-live")}
    config_pool = st.one_of(_pool(w, *CONFIG_POOL), PATHISH)
    gateway_bad = {
        "--port": st.one_of(st.integers(max_value=-1), st.integers(min_value=65536), st.just(w["silent"]),
                            TEXT.filter(lambda s: _parses(s, int) is None)).map(str),
        "--seed": st.one_of(st.integers(max_value=-1).map(str), TEXT.filter(lambda s: _parses(s, int) is None)),
        "--symbols": st.one_of(st.integers(max_value=0).map(str), st.from_regex(r"[ ,]*", fullmatch=True),
                               st.from_regex(r"[A-Z]{1,4}(,[A-Z]{1,4})*,,[A-Z]{0,4}", fullmatch=True)),
        "--speed": st.one_of(st.floats(max_value=-1e-9), st.sampled_from([math.nan, math.inf, -math.inf])).map(repr),
        "--host": st.sampled_from(["", "no.such.host.invalid", "192.0.2.1", "256.0.0.1", "::g", " "]),
        "--fill-delay": st.one_of(st.floats(max_value=-1e-9), st.sampled_from([math.nan, math.inf])).map(repr),
        "--master-client-id": st.one_of(st.integers(max_value=-1).map(str),
                                        TEXT.filter(lambda s: _parses(s, int) is None)),
        "--partial-fill-prob": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.000001),
                                         st.just(math.nan)).map(repr),
        # a report file that cannot be written is refused before the gateway listens
        "--pacing-report": st.sampled_from([w["dir"], "", "/dev/full/report.json", "/no/such/dir/report.json"]),
    }
    return {
        "sim": {
            "--seed": _opt("--seed", VALUE),
            "--duration": _opt("--duration", _cheap(30.000001, math.inf)),
            "--speed": _opt("--speed", _cheap(5e-324, 999.0)),
            "--symbols": _opt("--symbols", _cheap(4, 10**30)),
            "--trades": _opt("--trades", _cheap(21, 10**30)),
            "--config": _opt("--config", st.one_of(_pool(w, "valid_trades"), config_pool)),
            "--report": _opt("--report", st.one_of(_pool(w, "dir", "", "/dev/full"), _paths("fz-sim-"))),
            "--include-ticks": _flag("--include-ticks", "--no-include-ticks"),
            "--journal": _opt("--journal", st.one_of(_pool(w, *JOURNAL_POOL), _paths("fz-sim-"))),
            **live, **log,
        },
        "run": {"--config": _opt("--config", _pool(w, *RUN_POOL)), "--duration": _opt("--duration", VALUE),
                **live, **log},
        "doctor": {"--config": _opt("--config", _pool(w, *RUN_POOL)), "--json": _flag("--json")},
        "fake-gateway": {k: _opt(k, v) for k, v in gateway_bad.items()},
        "trades": {
            "--journal": _opt("--journal", st.one_of(_pool(w, *JOURNAL_POOL), URL, PATHISH)),
            "--config": _opt("--config", st.one_of(_pool(w, *RUN_POOL), PATHISH)),
            "--state": _opt("--state", st.one_of(st.sampled_from(["open", "closed", "OPEN", "bogus", ""]), TEXT)),
            "--symbol": _opt("--symbol", st.one_of(st.sampled_from(["SIM001", "", "%", "_", "' OR 1=1 --"]), TEXT)),
            "--user": _opt("--user", st.one_of(st.sampled_from(["alice", "", "%", "'; DROP TABLE trades; --"]), TEXT)),
            "--json": _flag("--json"),
        },
        "config": {"--config": _opt("--config", config_pool), "--reference": _flag("--reference", "--no-reference")},
    }


def _cli_options() -> dict[str, set[str]]:
    """Every command of the Typer app and the long name of each of its options (``--help`` excluded)."""
    out = {}
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        names = set()
        for param in command.params:
            longs = [o for o in param.opts if o.startswith("--")]
            if longs and longs[0] != "--help":
                names.add(longs[0])
        out[name] = names
    return out


def test_every_command_and_option_is_fuzzed(w):
    """A command or option added to the CLI fails here until it gets bad values below."""
    fuzzed = option_strategies(w)
    assert set(_cli_options()) == set(fuzzed), "commands without a fuzz strategy (or strategies without a command)"
    for command, names in _cli_options().items():
        assert names == set(fuzzed[command]), f"tickguard {command}: options and fuzz strategies differ"


def _args_for(data: st.DataObject, w: World, command: str) -> list[str]:
    strategies = option_strategies(w)[command]
    names = sorted(strategies)
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True),
                       label="options")
    args = [command]
    for name in chosen:
        args += data.draw(strategies[name], label=name)
    if command == "sim":  # a short run, whatever else was drawn
        args += [] if "--speed" in chosen else ["--speed", "0"]
        args += [] if "--duration" in chosen else ["--duration", "5"]
        args += [] if "--live" in chosen else ["--no-live"]
    if command == "run" and "--config" not in chosen:
        args += ["--config", w["run_closed"]]
    if command == "doctor" and "--config" not in chosen:
        args += ["--config", w["run_closed"]]
    if command == "fake-gateway" and "--port" not in chosen:
        args += ["--port", "0"]  # it must refuse anyway; if it does not, it listens on a free port and fails
    return args


class Findings:
    """The distinct problems a fuzzer met, one example each: a run reports them all, not only the first."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def check(self, o: Outcome, assertion: Any, *args: Any) -> None:
        try:
            assertion(o, *args)
        except pytest.fail.Exception as exc:
            self.seen.setdefault(self._kind(o, str(exc)), str(exc))

    @staticmethod
    def _kind(o: Outcome, failure: str) -> str:
        why = failure.split("\n", 1)[0]
        if isinstance(o.exception, GatewayStarted):
            return f"{why}: {sorted(a for a in o.args if a.startswith('--'))}"
        if o.exception is not None and not isinstance(o.exception, SystemExit):
            frames = [f for f in traceback.extract_tb(o.exception.__traceback__) if f.filename.startswith(SRC)]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            return f"{type(o.exception).__name__} at {where}"
        return f"{why} ({o.args[0] if o.args else ''})"

    def assert_none(self) -> None:
        if self.seen:
            pytest.fail(f"{len(self.seen)} distinct problem(s):\n\n" + "\n\n".join(self.seen.values()),
                        pytrace=False)


def _fuzz(w: World, command: str, examples: int) -> None:
    """``examples`` generated command lines: never a traceback; fake-gateway (given only bad values) always
    refuses."""
    found = Findings()

    @settings(FUZZ, max_examples=examples)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        o = invoke(_args_for(data, w, command))
        found.check(o, assert_refused if command == "fake-gateway" else assert_no_traceback, *(
            [()] if command == "fake-gateway" else []))

    one()
    found.assert_none()


def test_fuzz_sim(w):
    _fuzz(w, "sim", 60)


def test_fuzz_run(w):
    _fuzz(w, "run", 40)


def test_fuzz_doctor(w):
    _fuzz(w, "doctor", 15)


def test_fuzz_fake_gateway(w):
    _fuzz(w, "fake-gateway", 40)


def test_fuzz_trades(w):
    _fuzz(w, "trades", 60)


def test_fuzz_config_command(w):
    _fuzz(w, "config", 40)


# ---------------------------------------------------------------------------- generated config files and variables


def _toml(value: Any) -> str:
    """``value`` as a TOML value (strings as JSON strings, which TOML reads the same, DEL escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"


TOML_SCALAR = st.one_of(st.integers(-(2**70), 2**70), FLOATS, st.booleans(), TEXT,
                        st.sampled_from(["", "nan", "inf", "NORMAL", "MKT", "2026-11-23T09:30:00-05:00", "DEBUG"]))
TOML_VALUE = st.recursive(TOML_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)
RULE_KINDS = ["stop_loss", "take_profit", "trailing_stop", "break_even", "time_stop", "teleport", ""]
TRADE_FIELDS = ["symbol", "side", "qty", "entry_type", "limit_price", "entry_timeout_s", "user", "account", "ref"]
JUNK_KEY = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)


@st.composite
def config_file(draw) -> tuple[str, str]:
    """A TOML document with one generated setting (a known key or not) or one generated trade, and the name its
    refusal must carry."""
    if draw(st.integers(0, 4)) == 0:
        trade = {k: draw(TOML_VALUE) for k in draw(st.lists(st.sampled_from(TRADE_FIELDS), unique=True))}
        rules = draw(st.lists(st.fixed_dictionaries(
            {"kind": st.sampled_from(RULE_KINDS)},
            optional={k: TOML_VALUE for k in ("distance", "atr_mult", "fraction", "after_seconds", "offset")}),
            max_size=3))
        trade["rules"] = rules
        body = "\n".join(f"{k} = {_toml(v)}" for k, v in trade.items())
        return f"[[trades]]\n{body}\n", "trades"
    dotted = draw(st.one_of(st.sampled_from(REFERENCE_KEYS),
                            st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(["sim", "ib", "engine", "log",
                                                                                 "journal", "sim.market"]), JUNK_KEY),
                            st.builds(lambda s, k: f"{s}.{k}", JUNK_KEY, JUNK_KEY)))
    section, key = dotted.rsplit(".", 1)
    known = section.split(".")[0] in {k.split(".")[0] for k in REFERENCE_KEYS}
    return f"[{section}]\n{key} = {_toml(draw(TOML_VALUE))}\n", dotted if known else section.split(".")[0]


def test_fuzz_config_files(w):
    """A generated config is accepted, or refused naming the setting (dotted) - never a traceback."""
    found = Findings()
    path = Path(w["d"]) / "generated.toml"

    @settings(FUZZ, max_examples=120)
    @given(doc=config_file())
    def one(doc: tuple[str, str]) -> None:
        text, name = doc
        path.write_text(text, encoding="utf-8")
        o = invoke(["config", "-c", str(path)])
        assert "not valid TOML" not in o.stderr, f"the test wrote bad TOML:\n{text}"
        found.check(o, assert_no_traceback)
        if o.code != 0:
            found.check(o, assert_refused, (name,))

    one()
    found.assert_none()


def test_fuzz_environment():
    """A generated ``TICKGUARD_*`` variable is accepted, or refused naming the setting or the variable."""
    found = Findings()

    @settings(FUZZ, max_examples=80)
    @given(key=st.one_of(st.sampled_from(REFERENCE_KEYS), st.sampled_from(["sim", "ib", "engine", "log", "journal",
                                                                           "trades", "sim.market"])),
           value=st.one_of(VALUE, TOML_VALUE.map(json.dumps)))
    def one(key: str, value: str) -> None:
        var = "TICKGUARD_" + key.upper().replace(".", "__")
        o = invoke(["config"], env={var: value})
        found.check(o, assert_no_traceback)
        if o.code != 0:
            found.check(o, assert_refused, ((key, var),))

    one()
    found.assert_none()
