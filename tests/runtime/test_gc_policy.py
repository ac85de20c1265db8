"""The engine's collector policy (runtime/gc_policy.py): no collection inside a step, and what lives is frozen
after start-up and then every interval, never more often."""

import gc

from tickguard.runtime.gc_policy import CollectorPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_objects_alive_are_frozen_at_start_and_again_only_after_the_interval():
    clock = Clock()
    policy = CollectorPolicy(10.0, clock)
    try:
        policy.freeze()
        frozen = gc.get_freeze_count()
        keep = [[i] for i in range(1000)]  # long-lived objects made after start-up
        clock.now += 9.9
        policy.maybe_freeze()
        assert gc.get_freeze_count() == frozen and policy.freezes == 1  # not yet
        clock.now += 0.2
        policy.maybe_freeze()
        assert gc.get_freeze_count() >= frozen + len(keep) and policy.freezes == 2
    finally:
        gc.unfreeze()


def test_an_interval_of_zero_freezes_only_at_start():
    clock = Clock()
    policy = CollectorPolicy(0.0, clock)
    try:
        policy.freeze()
        clock.now += 3600
        policy.maybe_freeze()
        assert policy.freezes == 1
    finally:
        gc.unfreeze()


class Thresholds:
    """Set the collector's thresholds (and empty its young generations) for a test, then restore them."""

    def __init__(self, *limits: int) -> None:
        self.limits = limits

    def __enter__(self) -> None:
        self.saved = gc.get_threshold()
        gc.collect()
        gc.set_threshold(*self.limits)

    def __exit__(self, *exc: object) -> None:
        gc.set_threshold(*self.saved)


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it (and no free list hides the allocation)


def make_cycles(n: int) -> None:
    for _ in range(n):
        Node()


def test_after_step_collects_the_generation_cpython_would_once_its_threshold_is_reached():
    policy = CollectorPolicy(0.0)
    with Thresholds(50, 3, 2), policy.paused():
        assert policy.after_step() is None  # nothing allocated yet
        make_cycles(60)
        assert policy.after_step() == 0
        assert gc.get_count()[0] < 50 and policy.after_step() is None
        for _ in range(2):
            make_cycles(60)
            assert policy.after_step() == 0
        make_cycles(60)
        assert policy.after_step() == 1  # the third young collection's turn: generation 1 is over its threshold
        for _ in range(3):
            make_cycles(60)
            policy.after_step()
        generations = []
        for _ in range(8):
            make_cycles(60)
            generations.append(policy.after_step())
        assert 2 in generations  # two generation-1 collections later, a full one
    assert policy.collections[0] > 0 and policy.collections[1] > 0 and policy.collections[2] > 0


def test_paused_turns_the_automatic_collector_off_and_back_as_it_was():
    policy = CollectorPolicy(0.0)
    assert gc.isenabled()
    with policy.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with policy.paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()


def test_a_block_inside_a_block_collects_only_when_the_outer_one_ends():
    policy = CollectorPolicy(0.0)
    with Thresholds(5, 10, 10), policy.paused():
        with policy.paused():
            make_cycles(20)
        assert policy.collections == [0, 0, 0] and not gc.isenabled()  # still inside the outer block
    assert policy.collections[0] == 1 and gc.isenabled()
