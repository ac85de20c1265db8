"""The gateway's pacing report: how fast each client id really talked, readable by tests.

Why: the pacing tests in test_server_pacing.py show the gateway *punishes* a burst; an engine test needs
the converse - proof that its client never came near IB's limit - and needs it even when the gateway runs
in another process. So the pacer records every message's wall time and the gateway reports per client id.

What counts: every API message the client sends, startApi included (IB paces every message on the
connection, and startApi is one - in test_server_pacing.py it is already one of the 50). The
``API\\0v100..178`` greeting before it is not: it is the version handshake, not an API message.
Tests count what the real ib_async client put on the socket (``Client.sendMsg``) and compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import re
import signal
import sys
from pathlib import Path

import pytest
from fg_support import IbErrorCapture
from gateway_support import SYMBOLS, TIMEOUT, make_gateway, until
from ib_async import IB

from ibfake.clock import MessagePacer, PacingLimits, PacingReport, max_in_window
from ibfake.server import FakeGateway


class FrozenWall:
    """A wall clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def brute_max(times: list[float], window_s: float) -> int:
    """The definition, O(n^2): the most messages in any window (t - window_s, t] ending at a message."""
    return max((sum(1 for s in times if t - window_s < s <= t) for t in times), default=0)


# ------------------------------------------------------------------------------------ the pacer alone


def pacer_at(times: list[float], limits: PacingLimits | None = None) -> MessagePacer:
    wall = FrozenWall()
    pacer = MessagePacer(limits or PacingLimits(), wall)
    for t in times:
        wall.now = t
        pacer.admit()
    return pacer


@pytest.mark.parametrize(
    ("times", "window_s", "expected"),
    [
        ([], 1.0, 0),
        ([5.0], 1.0, 1),
        ([0.0, 1.0], 1.0, 1),  # exactly one window apart: never in the same window
        ([0.0, 0.5, 1.0], 1.0, 2),
        ([0.0, 0.5, 1.0], 1.5, 3),
        ([0.0, 0.25, 0.5, 0.75, 1.0, 1.25], 1.0, 4),
        ([0.0, 0.0, 0.0, 5.0, 5.0], 1.0, 3),  # simultaneous messages all share a window
        ([0.0, 0.875, 0.875, 1.0, 1.75, 1.875], 1.0, 4),  # best window (0.875, 1.875], not one starting at 0
        ([0.0, 2.0, 4.0, 6.0], 2.0, 1),
    ],
)
def test_max_in_window_on_hand_made_times(times: list[float], window_s: float, expected: int) -> None:
    assert max_in_window(times, window_s) == expected == brute_max(times, window_s)
    assert pacer_at(times).max_in_window(window_s) == expected


def test_max_in_window_defaults_to_the_limits_window_and_matches_the_definition() -> None:
    pacer = pacer_at([0.0, 0.5, 1.0, 1.5, 1.75], PacingLimits(window_s=1.0))
    assert pacer.max_in_window() == 3  # (0.75, 1.75]
    assert pacer_at([0.0, 0.5, 1.0, 1.5, 1.75], PacingLimits(window_s=2.0)).max_in_window() == 5  # all of them
    rng = random.Random(11)
    for _ in range(200):  # binary fractions: the window edges compare exactly
        times = sorted(rng.randrange(0, 64) / 8 for _ in range(rng.randrange(0, 40)))
        window_s = rng.choice([0.125, 0.5, 1.0, 2.5])
        assert max_in_window(times, window_s) == brute_max(times, window_s), (times, window_s)
    with pytest.raises(ValueError):
        max_in_window([1.0], 0.0)


def test_pacer_counts_received_refused_and_bursts() -> None:
    limits = PacingLimits(max_msgs_per_s=3, window_s=1.0)
    # 5 at t=0: 3 admitted, 2 refused (burst 1); t=0.5 still full: same burst; t=1.0 the window emptied;
    # 4 more at t=1.0 then: 3 admitted, 1 refused, a new burst (a window after the first one began)
    pacer = pacer_at([0.0] * 5 + [0.5] + [1.0] * 4, limits)
    assert (pacer.received, pacer.refused, pacer.violations, pacer.drops) == (10, 4, 2, 0)
    assert pacer.max_in_window() == 6  # (0, 1]: the one at 0.5 and the four at 1.0
    assert list(pacer.times) == [0.0] * 5 + [0.5] + [1.0] * 4  # refused messages are recorded too


def test_report_merges_connections_before_measuring_the_window() -> None:
    first, second = pacer_at([0.0, 0.25, 0.5]), pacer_at([0.75, 0.875, 3.0])
    second.drops = 1
    report = PacingReport.of(4, [first, second], 1.0)
    assert report == PacingReport(client_id=4, received=6, refused=0, violations=0, max_in_window=5, drops=1)
    assert max(first.max_in_window(), second.max_in_window()) == 3  # per connection, the burst is not seen


# ------------------------------------------------------------------------- through a real ib_async client


async def connect_counting(gw: FakeGateway | int, client_id: int) -> tuple[IB, list[str]]:
    """A real ib_async client (to a gateway, or a port) whose every API message (startApi first) is recorded."""
    ib = IB()
    sent: list[str] = []
    original = ib.client.sendMsg

    def counting(msg: str) -> None:
        if msg:  # ib_async's throttle re-calls sendMsg(None) to flush its queue
            sent.append(msg)
        original(msg)

    ib.client.sendMsg = counting  # type: ignore[method-assign]
    port = gw if isinstance(gw, int) else gw.port
    await asyncio.wait_for(ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=TIMEOUT), TIMEOUT * 2)
    ib.client.MaxRequests = 0  # bypass ib_async's own 45/s throttle: the gateway must see the raw rate
    return ib, sent


async def received(gw: FakeGateway, client_id: int, count: int) -> PacingReport:
    """The client's report once the gateway has read ``count`` of its messages."""
    await gw.wait_for(lambda: client_id in gw.pacing_report() and gw.pacing_report()[client_id].received == count)
    return gw.pacing_report()[client_id]


async def test_report_counts_every_message_the_client_sent_start_api_included() -> None:
    wall = FrozenWall()
    with IbErrorCapture.installed() as errors:
        errors.allow("Error 100")
        gw = await make_gateway(wall=wall, pacing=PacingLimits(max_msgs_per_s=20)).start()
        try:
            ib, sent = await connect_counting(gw, 1)
            synced = len(sent)
            assert sent[0].split("\0")[0] == "71"  # startApi: the first message, and counted
            report = await received(gw, 1, synced)
            assert synced == gw.sessions[0].messages_received < 20  # the connect sync fits in one second
            assert (report.refused, report.violations, report.max_in_window) == (0, 0, synced)
            wall.now += 2.0  # a fresh window for the burst
            for _ in range(30):
                ib.client.reqIds(1)
            report = await received(gw, 1, synced + 30)
            assert len(sent) == synced + 30
            assert report == PacingReport(client_id=1, received=synced + 30, refused=10, violations=1,
                                          max_in_window=30, drops=0)  # fmt: skip
            ib.disconnect()
        finally:
            await gw.close()
        assert not gw.errors and not errors.unexpected(), errors.unexpected()


async def test_report_is_per_client_id_and_survives_reconnects_and_drops() -> None:
    wall = FrozenWall()
    limits = PacingLimits(max_msgs_per_s=20, violations_to_drop=3, violation_window_s=5.0)
    with IbErrorCapture.installed() as errors:
        errors.allow("Error 100")
        errors.allow("Peer closed connection")
        gw = await make_gateway(wall=wall, pacing=limits).start()
        try:
            one, sent_one = await connect_counting(gw, 1)
            two, sent_two = await connect_counting(gw, 2)
            for _ in range(5):
                two.client.reqIds(1)
            await received(gw, 2, len(sent_two))
            for burst in range(3):  # three one-second bursts of 25: the third violation drops client 1
                wall.now += 1.5
                for _ in range(25):
                    one.client.reqIds(1)
                if burst < 2:  # read at this wall time before the clock moves on
                    await received(gw, 1, len(sent_one))
            await until(lambda: not one.isConnected())
            await gw.wait_for(lambda: gw.client_ids() == [2])
            # the gateway stops reading at the refusal that drops the connection: 4 of the last 25 are never read
            dropped = await received(gw, 1, len(sent_one) - 4)
            assert (dropped.refused, dropped.violations, dropped.drops, dropped.max_in_window) == (5 + 5 + 1, 3, 1, 25)

            wall.now += 10.0  # the same client id comes back, on a new connection with a fresh pacer
            again, sent_again = await connect_counting(gw, 1)
            for _ in range(10):
                again.client.reqIds(1)
            report = await received(gw, 1, len(sent_one) - 4 + len(sent_again))
            assert report == PacingReport(client_id=1, received=len(sent_one) - 4 + len(sent_again), refused=11,
                                          violations=3, max_in_window=25, drops=1)  # fmt: skip
            quiet = len(sent_two)
            assert gw.pacing_report()[2] == PacingReport(2, received=quiet, refused=0, violations=0,
                                                         max_in_window=quiet, drops=0)  # fmt: skip
            assert sorted(gw.pacing_report()) == [1, 2] and gw.pacing_drops == 1
            again.disconnect()
            two.disconnect()
            await gw.wait_for(lambda: not gw.sessions)
            assert gw.pacing_report()[1] == report  # closed sessions stay in the report
        finally:
            await gw.close()
        assert not gw.errors and not errors.unexpected(), errors.unexpected()


# ------------------------------------------------------------------------------------- the runner's file


async def test_serve_writes_the_report_when_stopped_or_cancelled(tmp_path: Path) -> None:
    from ibfake.runner import serve

    for how in ("stop", "cancel"):  # cancel: what asyncio.run does to serve() on Ctrl-C
        path = tmp_path / f"pacing-{how}.json"
        stop = asyncio.Event()
        ready: asyncio.Future[FakeGateway] = asyncio.get_running_loop().create_future()
        running = serve("127.0.0.1", 0, seed=3, symbols=SYMBOLS, speed=0.0, stop=stop, on_ready=ready.set_result,
                        out=io.StringIO(), pacing_report=path)  # fmt: skip
        task = asyncio.ensure_future(running)
        try:
            gw = await asyncio.wait_for(ready, TIMEOUT)
            with IbErrorCapture.installed() as errors:
                ib, sent = await connect_counting(gw, 3)
                for _ in range(7):
                    ib.client.reqIds(1)
                await received(gw, 3, len(sent))
                ib.disconnect()
                assert not errors.unexpected()
            assert not path.exists()  # written when the gateway stops, not before
        finally:
            if how == "stop":
                stop.set()
            else:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, TIMEOUT)
        report = json.loads(path.read_text())
        assert list(report) == ["3"]
        fields = report["3"]
        assert {k: fields[k] for k in ("client_id", "received", "refused", "violations", "drops")} == {
            "client_id": 3, "received": len(sent), "refused": 0, "violations": 0, "drops": 0}  # fmt: skip
        assert 1 <= fields["max_in_window"] <= len(sent)  # real wall time: how many fell in one second varies
        assert sorted(fields) == sorted(PacingReport.__dataclass_fields__)


async def test_gateway_process_writes_the_report_on_ctrl_c(tmp_path: Path) -> None:
    """The way a test drives ``tickguard fake-gateway``: its own process, stopped with SIGINT."""
    path = tmp_path / "pacing.json"
    code = f"from ibfake.runner import run_forever; run_forever(port=0, seed=3, pacing_report={str(path)!r})"
    # started with SIGINT ignored, as a shell script's background job (or a pytest-xdist worker's child) is: the
    # gateway must still stop on it
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()  # a loaded machine starts slowly
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        with IbErrorCapture.installed() as errors:
            ib, sent = await connect_counting(int(match[1]), 12)
            for _ in range(5):
                await asyncio.wait_for(ib.reqCurrentTimeAsync(), TIMEOUT)  # answered: the gateway has read them all
            ib.disconnect()
            assert not errors.unexpected()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    report = json.loads(path.read_text())
    assert list(report) == ["12"]
    assert (report["12"]["received"], report["12"]["refused"], report["12"]["drops"]) == (len(sent), 0, 0)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind
