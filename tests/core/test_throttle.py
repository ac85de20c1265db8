"""The throttle (core.throttle): IB's message budget, spent most urgent first.

Why these checks: a message past IB's budget earns error 100 and may cost the connection; an exit that waits
behind an entry, or is refused, leaves a position unprotected. So the property test drives random operations
against a model written here from the rules (not from the module): the sliding window and the token bucket
are checked from their definitions on the log of send times, the throttle must send exactly when they allow
(so a withdrawal spends nothing), nothing less urgent goes while something more urgent waits, and at the end
every message not withdrawn or refused is sent exactly once, with its newest payload.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from tickguard.core.throttle import SECOND, Lane, Message, Refusal, Throttle, ThrottleLimits

REFUSABLE = {Lane.ENTRY, Lane.WHAT_IF, Lane.DATA}
T0 = 1_764_000_000_000_000_000


Clock = FakeClock  # an integer clock the test moves by hand (tests/conftest.py)


# ----------------------------------------------------------------------------- the rules, from definitions


def window_ok(times: list[int], rate: int, window_ns: int) -> bool:
    """No window (t - window_ns, t] holds more than ``rate`` sends: any rate + 1 sends span window_ns or more."""
    return all(times[i + rate] - times[i] >= window_ns for i in range(len(times) - rate))


def bucket_ok_ending_at(times: list[int], j: int, rate: int, window_ns: int, burst: int) -> bool:
    """Every interval [times[i], times[j]] holds at most burst + floor(d * rate / window_ns) sends."""
    return all(j - i + 1 <= burst + (times[j] - times[i]) * rate // window_ns for i in range(j + 1))


def allowed(times: list[int], t: int, lim: ThrottleLimits) -> bool:
    """Would one more send at ``t`` keep both rules?"""
    log = [*times, t]
    return window_ok(log[-lim.rate - 1:], lim.rate, lim.window_ns) and bucket_ok_ending_at(
        log, len(log) - 1, lim.rate, lim.window_ns, lim.burst)


# ------------------------------------------------------------------------------------------ the property

keys = st.sampled_from([f"k{i}" for i in range(5)])
ops = st.one_of(
    st.tuples(st.just("offer"), keys, st.sampled_from(list(Lane)), st.integers(0, 3)),
    st.tuples(st.just("offer"), keys, st.sampled_from([Lane.EXIT_CRITICAL, Lane.EXIT, Lane.CANCEL_MODIFY]),
              st.integers(0, 3)),
    st.tuples(st.just("withdraw"), keys),
    st.tuples(st.just("advance"), st.one_of(st.sampled_from([0, 1]), st.integers(0, 250))),
    st.tuples(st.just("release")),
    st.tuples(st.just("expire")),
)


@st.composite
def limits(draw) -> ThrottleLimits:
    rate = draw(st.integers(1, 5))
    return ThrottleLimits(
        rate=rate,
        window_ns=draw(st.integers(1, 100)),
        burst=draw(st.integers(1, rate)),
        queue_max={lane: draw(st.integers(1, 3)) for lane in REFUSABLE},
        wait_max_ns={lane: draw(st.one_of(st.sampled_from([0, 1, 2]), st.integers(0, 300))) for lane in REFUSABLE},
    )


class Model:
    """What must be queued, from the spec: key -> (lane, risk, arrival, queued_ns, payload)."""

    def __init__(self, lim: ThrottleLimits, clock: Clock) -> None:
        self.lim, self.clock, self.th = lim, clock, Throttle(lim, clock)
        self.queued: dict[str, tuple[Lane, tuple, int, int, int]] = {}
        self.arrivals = 0
        self.payloads = 0
        self.log: list[int] = []  # send times
        self.released_payloads: list[int] = []
        self.sent = dict.fromkeys(Lane, 0)

    def depth(self, lane: Lane) -> int:
        return sum(1 for q in self.queued.values() if q[0] == lane)

    def offer(self, key: str, lane: Lane, risk: int) -> None:
        self.payloads += 1
        old = self.queued.get(key)
        adds = old is None or old[0] != lane
        full = lane in REFUSABLE and adds and self.depth(lane) >= self.lim.queue_max[lane]
        out = self.th.offer(key, lane, self.payloads, (risk,))
        if full:
            assert isinstance(out, Refusal) and out.message.payload == self.payloads
            assert lane.name in out.reason and str(self.lim.queue_max[lane]) in out.reason
            return
        assert out is None  # exits, cancels and modifies are never refused; a refusable lane only at its bound
        if old is None:
            self.arrivals += 1
            self.queued[key] = (lane, (risk,), self.arrivals, self.clock.now, self.payloads)
        else:  # a replacement keeps its place and its queued time
            self.queued[key] = (lane, (risk,), old[2], old[3], self.payloads)

    def withdraw(self, key: str) -> None:
        out = self.th.withdraw(key)
        old = self.queued.pop(key, None)
        assert (out is None) == (old is None)
        assert out is None or out.payload == old[4]

    def release(self) -> list[Message]:
        now, lim = self.clock.now, self.lim
        nxt = self.th.next_release_ns()
        assert (nxt is None) == (not self.queued)
        if nxt is not None:  # the earliest time the rules allow, exactly
            assert nxt >= now and allowed(self.log, nxt, lim) and (nxt == now or not allowed(self.log, nxt - 1, lim))
        out = self.th.release()
        ranks = []
        for m in out:
            q = self.queued.pop(m.key, None)
            assert q is not None, f"{m.key} released but not queued (twice, or withdrawn)"
            assert (m.lane, m.risk, m.queued_ns, m.payload) == (q[0], q[1], q[3], q[4])  # the newest payload
            self.log.append(now)
            assert bucket_ok_ending_at(self.log, len(self.log) - 1, lim.rate, lim.window_ns, lim.burst)
            self.released_payloads.append(m.payload)
            self.sent[m.lane] += 1
            ranks.append((m.lane, m.risk, q[2]))  # the model's arrival: a replacement must keep its place
        assert ranks == sorted(ranks)
        if ranks and self.queued:  # no priority inversion
            assert ranks[-1] < min((q[0], q[1], q[2]) for q in self.queued.values())
        assert window_ok(self.log, lim.rate, lim.window_ns)
        assert not (self.queued and allowed(self.log, now, lim)), "the budget allows more, yet messages wait"
        return out

    def expire(self) -> None:
        now = self.clock.now
        due = {k for k, q in self.queued.items() if q[0] in REFUSABLE and now - q[3] > self.lim.wait_max_ns[q[0]]}
        out = self.th.expire()
        assert {r.message.key for r in out} == due
        for r in out:
            q = self.queued.pop(r.message.key)
            assert r.message.payload == q[4] and r.message.lane.name in r.reason and "waited" in r.reason


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(limits(), st.lists(ops, min_size=30, max_size=80))
def test_random_operations_keep_the_budget_the_order_and_every_exit(lim, script):
    clock = Clock()
    model = Model(lim, clock)
    for op in script:
        if op[0] == "offer":
            model.offer(op[1], op[2], op[3])
        elif op[0] == "withdraw":
            model.withdraw(op[1])
        elif op[0] == "advance":
            clock.now += op[1]
        elif op[0] == "release":
            model.release()
        else:
            model.expire()
        assert model.th.depth() == {lane: model.depth(lane) for lane in Lane}
    while (nxt := model.th.next_release_ns()) is not None:  # enough time passes: everything queued goes
        clock.now = nxt
        assert model.release(), "next_release_ns promised a release"
    assert model.queued == {}
    assert len(model.released_payloads) == len(set(model.released_payloads))
    assert model.th.stats().sent == model.sent


# ----------------------------------------------------------------------------------------- focused cases


def test_an_exit_storm_leaves_in_risk_order_45_a_second():
    clock = Clock()
    th = Throttle(ThrottleLimits(), clock)
    risks = list(range(1000))
    random.Random(7).shuffle(risks)
    for r in risks:
        assert th.offer(f"exit{r}", Lane.EXIT, r, risk=(r, -100)) is None
    sent: list[tuple[int, int]] = []
    while (nxt := th.next_release_ns()) is not None:
        clock.now = nxt
        out = th.release()
        assert out, "next_release_ns promised a release"
        sent += [(clock.now, m.payload) for m in out]
    times = [t for t, _ in sent]
    assert [p for _, p in sent] == list(range(1000))
    assert sum(1 for t in times if t < T0 + SECOND) == 45
    assert window_ok(times, 45, SECOND)
    assert times[-1] == T0 + (1000 // 45) * SECOND  # no slower than the budget: a block of 45 each second
    assert th.stats().sent[Lane.EXIT] == 1000 and th.stats().wait_ns_max[Lane.EXIT] == times[-1] - T0


def test_a_less_urgent_message_never_overtakes_a_waiting_exit():
    clock = Clock()
    th = Throttle(ThrottleLimits(rate=1, burst=1), clock)
    th.offer("e1", Lane.ENTRY, "entry", risk=(0,))
    th.offer("x1", Lane.EXIT, "exit", risk=(9,))
    th.offer("c1", Lane.EXIT_CRITICAL, "critical", risk=(9,))
    assert [m.key for m in th.release()] == ["c1"]
    clock.now += SECOND
    assert [m.key for m in th.release()] == ["x1"]
    clock.now += SECOND - 1
    assert th.release() == []  # 1 ns short of the window
    clock.now += 1
    assert [m.key for m in th.release()] == ["e1"]


def test_an_entry_beyond_its_queue_bound_is_refused_and_exits_never_are():
    clock = Clock()
    th = Throttle(ThrottleLimits(rate=1, burst=1, queue_max={Lane.ENTRY: 2}), clock)
    assert th.offer("a", Lane.ENTRY, 1) is None and th.offer("b", Lane.ENTRY, 2) is None
    refusal = th.offer("c", Lane.ENTRY, 3)
    assert isinstance(refusal, Refusal) and refusal.message.key == "c"
    assert "ENTRY" in refusal.reason and "bound of 2" in refusal.reason and "2 messages waiting" in refusal.reason
    assert th.offer("b", Lane.ENTRY, 4) is None  # a replacement adds nothing: accepted
    assert all(th.offer(f"x{i}", Lane.EXIT, i) is None for i in range(5000))
    assert th.depth()[Lane.ENTRY] == 2 and th.depth()[Lane.EXIT] == 5000
    assert th.stats().refused == {**dict.fromkeys(Lane, 0), Lane.ENTRY: 1}


def test_an_entry_that_waits_too_long_expires_with_a_reason():
    clock = Clock()
    th = Throttle(ThrottleLimits(), clock)
    th.offer("e", Lane.ENTRY, "order")
    th.offer("x", Lane.EXIT, "exit")
    assert th.next_expiry_ns() == T0 + 30 * SECOND + 1
    clock.now += 30 * SECOND
    assert th.expire() == []  # waited exactly the bound: not longer
    clock.now += 1
    (refusal,) = th.expire()
    assert refusal.message.key == "e" and "ENTRY" in refusal.reason and "waited 30.000 s" in refusal.reason
    assert "bound of 30 s" in refusal.reason
    assert [m.key for m in th.release()] == ["x"] and th.next_release_ns() is None and th.next_expiry_ns() is None


def test_a_modify_replaces_the_queued_one_and_keeps_its_place():
    clock = Clock()
    th = Throttle(ThrottleLimits(rate=2, burst=1), clock)
    th.offer("blocker", Lane.EXIT, 0)
    assert len(th.release()) == 1  # the bucket is empty now
    th.offer("o1:modify", Lane.CANCEL_MODIFY, "v1", risk=(5,))
    th.offer("o2:modify", Lane.CANCEL_MODIFY, "w1", risk=(5,))
    clock.now += 1
    th.offer("o1:modify", Lane.CANCEL_MODIFY, "v2", risk=(5,))
    assert th.depth()[Lane.CANCEL_MODIFY] == 2
    clock.now = th.next_release_ns()
    (first,) = th.release()
    assert (first.key, first.payload, first.queued_ns) == ("o1:modify", "v2", T0)


def test_a_message_moved_out_of_a_refusable_lane_never_expires():
    clock = Clock()
    th = Throttle(ThrottleLimits(wait_max_ns={Lane.ENTRY: 10}), clock)
    th.offer("o1", Lane.ENTRY, "entry")
    th.offer("o1", Lane.EXIT, "now an exit")
    clock.now += 11
    assert th.expire() == [] and th.depth()[Lane.EXIT] == 1
    assert [m.payload for m in th.release()] == ["now an exit"]


def test_a_cancel_of_a_queued_order_spends_nothing():
    clock = Clock()
    th = Throttle(ThrottleLimits(rate=1, burst=1), clock)
    th.offer("o1:place", Lane.ENTRY, "order")
    withdrawn = th.withdraw("o1:place")
    assert withdrawn is not None and withdrawn.payload == "order"
    assert th.withdraw("o1:place") is None and th.next_release_ns() is None
    th.offer("o2:place", Lane.ENTRY, "other")
    assert [m.key for m in th.release()] == ["o2:place"]  # the budget of one was still whole
    assert th.stats().sent[Lane.ENTRY] == 1


def test_replacements_do_not_grow_the_queue_without_bound():
    th = Throttle(ThrottleLimits(), Clock())
    for i in range(10_000):
        th.offer("o1:modify", Lane.CANCEL_MODIFY, i, risk=(i % 7,))
    assert len(th._heap) < 200 and th.depth()[Lane.CANCEL_MODIFY] == 1
    assert [m.payload for m in th.release()] == [9_999]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"rate": 0}, "rate must be a positive"),
        ({"window_ns": 0}, "window_ns must be a positive"),
        ({"burst": 0}, "burst must be an integer from 1"),
        ({"rate": 10, "burst": 11}, "burst must be an integer from 1 to rate (10)"),
        ({"queue_max": {Lane.EXIT: 5}}, "EXIT has no bound"),
        ({"queue_max": {Lane.ENTRY: 0}}, "queue_max[ENTRY] must be an integer of at least 1"),
        ({"wait_max_ns": {Lane.DATA: -1}}, "wait_max_ns[DATA]"),
    ],
)
def test_limits_are_validated(kwargs, words):
    with pytest.raises(ValueError) as err:
        ThrottleLimits(**kwargs)
    assert words in str(err.value)


def test_limits_merge_given_bounds_with_the_defaults():
    lim = ThrottleLimits(queue_max={Lane.ENTRY: 3})
    assert dict(lim.queue_max) == {Lane.ENTRY: 3, Lane.WHAT_IF: 200, Lane.DATA: 1000}


@settings(max_examples=200, deadline=None)
@given(rate=st.integers(1, 12), burst=st.integers(1, 12),
       history=st.lists(st.tuples(st.integers(0, 400_000_000), st.integers(0, 4)), max_size=30))
def test_room_is_exactly_what_a_release_would_send_now(rate, burst, history):
    """``room()`` (how much of a burst is left, for the engine's early exits) says exactly how many messages
    ``release`` lets go at this moment, whatever was sent before - checked against the release itself."""
    clock = FakeClock(0)
    t = Throttle(ThrottleLimits(rate=rate, burst=min(burst, rate)), clock)
    n = 0
    for gap_ns, sends in history:
        clock.now += gap_ns
        for _ in range(sends):
            n += 1
            t.offer(f"h{n}", Lane.EXIT, None)
        t.release()
    while t:  # nothing queued may linger into the check
        clock.now += SECOND
        t.release()
    room = t.room()
    for i in range(rate + burst + 1):
        t.offer(f"x{i}", Lane.EXIT, None)
    assert len(t.release()) == room


def test_a_release_up_to_a_lane_leaves_the_less_urgent_queued():
    clock = FakeClock(0)
    t = Throttle(ThrottleLimits(rate=10, burst=10), clock)
    for key, lane in (("entry", Lane.ENTRY), ("cancel", Lane.CANCEL_MODIFY), ("exit", Lane.EXIT),
                      ("critical", Lane.EXIT_CRITICAL)):
        t.offer(key, lane, None)
    assert [m.key for m in t.release(upto=Lane.EXIT)] == ["critical", "exit"]
    assert t.depth()[Lane.CANCEL_MODIFY] == 1 and t.depth()[Lane.ENTRY] == 1
    assert [m.key for m in t.release()] == ["cancel", "entry"]
