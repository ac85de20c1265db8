"""The engine's collector policy (runtime/gc_policy.py): what lives is frozen after start-up and then every
interval, never more often."""

import gc

from tickguard.runtime.gc_policy import FreezePolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_objects_alive_are_frozen_at_start_and_again_only_after_the_interval():
    clock = Clock()
    policy = FreezePolicy(10.0, clock)
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
    policy = FreezePolicy(0.0, clock)
    try:
        policy.freeze()
        clock.now += 3600
        policy.maybe_freeze()
        assert policy.freezes == 1
    finally:
        gc.unfreeze()
