"""Tests of the TTL cache: time is an injected fake clock, loads are gated on events, every await is bounded."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickguard.adapters.ttl_cache import CacheClosedError, CacheError, CacheStats, StaleValueError, TTLCache

T = TypeVar("T")
TIMEOUT = 2.0


async def w(aw: Awaitable[T]) -> T:
    """Every await in these tests is bounded: a bug shows up as a timeout, not a hung suite."""
    return await asyncio.wait_for(aw, TIMEOUT)


class Clock:
    """Seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Loader:
    """A loader the test steers: counts calls, can be held on a gate, made to fail, or told what to return."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.values: dict[str, object] = {}
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, key: str) -> object:
        self.calls.append(key)
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        return self.values.get(key, f"{key}#{self.calls.count(key)}")

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        return self.gate


class SecDefError(Exception):
    """Stands in for IB error 200, "no security definition has been found"."""


def make(loader: Loader, clock: Clock, **kw: object) -> TTLCache[str, object]:
    kw.setdefault("ttl", 10.0)
    kw.setdefault("refresh_ahead", None)
    return TTLCache(loader, clock=clock, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def loader() -> Loader:
    return Loader()


async def test_hit_miss_expiry(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock)
    assert await w(cache.get("a")) == "a#1"
    clock.advance(9.999)
    assert await w(cache.get("a")) == "a#1"
    assert cache.peek("a") == "a#1"
    clock.advance(0.001)  # exactly at expiry: expired
    assert cache.peek("a") is None
    assert await w(cache.get("a")) == "a#2"
    assert loader.calls == ["a", "a"]
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)


async def test_ttl_precedence(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, ttl_for=lambda k: 3.0 if k == "short" else 10.0)
    await w(cache.get("short"))
    await w(cache.get("x", ttl=1.0))
    cache.put("p", "put", ttl=20.0)
    clock.advance(2.0)
    assert (cache.peek("short"), cache.peek("x"), cache.peek("p")) == ("short#1", None, "put")
    clock.advance(1.0)
    assert cache.peek("short") is None
    clock.advance(16.9)
    assert cache.peek("p") == "put"


async def test_refresh_ahead_serves_old_value_and_updates_in_background(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, refresh_ahead=0.8)
    await w(cache.get("a"))
    clock.advance(7.9)
    assert await w(cache.get("a")) == "a#1" and cache.pending_refreshes == 0
    gate = loader.hold()
    clock.advance(0.1)
    assert await w(cache.get("a")) == "a#1"  # served at once although the loader is blocked
    assert cache.pending_refreshes == 1
    assert await w(cache.get("a")) == "a#1"  # a second read does not start a second refresh
    await w(loader.started.wait())
    gate.set()
    await w(cache.drain())
    assert cache.pending_refreshes == 0
    assert loader.calls == ["a", "a"]
    assert await w(cache.get("a")) == "a#2"
    assert cache.stats.refreshes == 1 and cache.stats.hits == 4
    clock.advance(9.9)  # the refreshed entry's TTL counts from the refresh
    assert cache.peek("a") == "a#2"


async def test_single_flight_100_concurrent_misses(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock)
    gate = loader.hold()
    tasks = [asyncio.create_task(cache.get("a")) for _ in range(100)]
    await w(loader.started.wait())
    gate.set()
    results = await w(asyncio.gather(*tasks))
    assert results == ["a#1"] * 100
    assert loader.calls == ["a"]
    assert cache.stats.misses == 100 and cache.stats.loads == 1


async def test_single_flight_propagates_exception_then_retries(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, min_retry_interval=60.0)  # no entry yet: the retry interval does not apply
    gate = loader.hold()
    boom = RuntimeError("gateway down")
    loader.fail = boom
    tasks = [asyncio.create_task(cache.get("a")) for _ in range(100)]
    await w(loader.started.wait())
    gate.set()
    results = await w(asyncio.gather(*tasks, return_exceptions=True))
    assert all(r is boom for r in results)
    assert loader.calls == ["a"] and "a" not in cache
    loader.fail = None
    assert await w(cache.get("a")) == "a#2"
    assert cache.stats.load_failures == 1


async def test_stale_bound(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, max_stale=5.0, min_retry_interval=1.0)
    await w(cache.get("a"))
    clock.advance(10.0)
    loader.fail = RuntimeError("timeout")
    assert await w(cache.get("a")) == "a#1"  # refresh failed: stale value within the bound
    clock.advance(2.0)
    assert await w(cache.get("a")) == "a#1"  # served at once; a retry runs in the background
    await w(cache.drain())
    assert len(loader.calls) == 3
    clock.advance(3.0)  # 5s past expiry: beyond max_stale
    with pytest.raises(StaleValueError) as info:
        await w(cache.get("a"))
    assert isinstance(info.value, CacheError)
    assert info.value.key == "a" and info.value.last_error is loader.fail
    assert "'a'" in str(info.value) and "timeout" in str(info.value)
    assert cache.stats.stale_serves == 2 and cache.stats.load_failures == 3  # 3 failed loads after the first
    loader.fail = None
    clock.advance(1.0)
    assert await w(cache.get("a")) == "a#5"
    clock.advance(15.0)  # max_stale counts from the *new* value's expiry
    loader.fail = RuntimeError("again")
    with pytest.raises(StaleValueError):
        await w(cache.get("a"))


async def test_min_retry_interval_respected(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, max_stale=6.0, min_retry_interval=5.0)
    await w(cache.get("a"))
    clock.advance(10.0)
    loader.fail = RuntimeError("down")
    assert await w(cache.get("a")) == "a#1"
    for _ in range(4):
        clock.advance(1.0)
        assert await w(cache.get("a")) == "a#1"
        await w(cache.drain())
    assert len(loader.calls) == 2  # four reads inside the interval: no new loader call
    clock.advance(1.0)  # 5s after the failure: one retry
    assert await w(cache.get("a")) == "a#1"
    await w(cache.drain())
    assert len(loader.calls) == 3
    clock.advance(1.0)  # past max_stale, 1s after the last failure: error without calling the loader
    with pytest.raises(StaleValueError):
        await w(cache.get("a"))
    assert len(loader.calls) == 3


async def test_failed_refresh_ahead_is_retried_after_interval(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, refresh_ahead=0.5, min_retry_interval=2.0)
    await w(cache.get("a"))
    clock.advance(5.0)
    loader.fail = RuntimeError("down")
    assert await w(cache.get("a")) == "a#1"
    await w(cache.drain())
    clock.advance(1.0)
    assert await w(cache.get("a")) == "a#1"
    assert cache.pending_refreshes == 0 and len(loader.calls) == 2
    loader.fail = None
    clock.advance(1.0)
    assert await w(cache.get("a")) == "a#1"
    await w(cache.drain())
    assert len(loader.calls) == 3 and cache.peek("a") == "a#3"


async def test_invalidate_during_inflight_load_discards_result(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock)
    gate = loader.hold()
    task = asyncio.create_task(cache.get("a"))
    await w(loader.started.wait())
    assert cache.invalidate("a") is True  # nothing cached yet, but a load was overtaken
    gate.set()
    assert await w(task) == "a#1"  # the waiter still gets what it asked for...
    assert "a" not in cache  # ...but the cache does not keep a value that predates the invalidation
    assert await w(cache.get("a")) == "a#2"


async def test_invalidate_all_during_inflight_refresh_discards_result(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, refresh_ahead=0.5)
    await w(cache.get("a"))
    await w(cache.get("b"))
    gate = loader.hold()
    clock.advance(6.0)
    await w(cache.get("a"))
    await w(loader.started.wait())
    assert cache.invalidate_all() == 2
    gate.set()
    await w(cache.drain())
    assert len(cache) == 0
    assert cache.stats.invalidations == 2
    assert await w(cache.get("b")) == "b#2" and await w(cache.get("a")) == "a#3"
    assert cache.invalidate("a") is True and cache.invalidate("a") is False


async def test_put_wins_over_inflight_load(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock)
    gate = loader.hold()
    task = asyncio.create_task(cache.get("a"))
    await w(loader.started.wait())
    cache.put("a", "manual")
    gate.set()
    await w(task)
    assert cache.peek("a") == "manual"


async def test_lru_eviction(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, max_entries=2)
    await w(cache.get("a"))
    await w(cache.get("b"))
    await w(cache.get("a"))  # a is now the most recently used
    await w(cache.get("c"))
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    assert cache.stats.evictions == 1
    cache.put("d", 1)
    assert "a" not in cache and cache.stats.evictions == 2


async def test_on_change_fires_only_on_real_change(loader: Loader, clock: Clock) -> None:
    changes: list[tuple[str, object, object]] = []
    cache = make(loader, clock, on_change=lambda k, old, new: changes.append((k, old, new)))
    loader.values["AAPL"] = 265598
    await w(cache.get("AAPL"))
    clock.advance(10.0)
    await w(cache.get("AAPL"))
    assert changes == []  # first load and an identical reload are not changes
    loader.values["AAPL"] = 999999  # conId changed after a corporate action
    clock.advance(10.0)
    await w(cache.get("AAPL"))
    assert changes == [("AAPL", 265598, 999999)]
    cache.put("AAPL", 1)
    assert len(changes) == 1  # explicit puts are the caller's own knowledge, not a discovered change


async def test_on_change_hook_error_does_not_break_the_load(loader: Loader, clock: Clock) -> None:
    def bad_hook(key: str, old: object, new: object) -> None:
        raise ValueError("hook bug")

    cache = make(loader, clock, on_change=bad_hook)
    await w(cache.get("a"))
    clock.advance(10.0)
    assert await w(cache.get("a")) == "a#2"


async def test_should_invalidate_evicts_instead_of_serving_stale(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, max_stale=100.0, should_invalidate=lambda e: isinstance(e, SecDefError))
    await w(cache.get("a"))
    await w(cache.get("b"))
    clock.advance(10.0)
    loader.fail = SecDefError("200: no security definition")
    with pytest.raises(SecDefError):  # the loader's own error, not a stale value
        await w(cache.get("a"))
    assert "a" not in cache and cache.stats.invalidations == 1
    loader.fail = RuntimeError("timeout")  # other errors still fall back to the stale value
    assert await w(cache.get("b")) == "b#1"
    assert "b" in cache


async def test_counters(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, refresh_ahead=0.5, max_stale=5.0, max_entries=2)
    await w(cache.get("a"))  # miss, load
    await w(cache.get("a"))  # hit
    clock.advance(5.0)
    await w(cache.get("a"))  # hit + background refresh
    await w(cache.drain())
    await w(cache.get("b"))  # miss
    await w(cache.get("c"))  # miss, evicts a
    clock.advance(10.0)
    loader.fail = RuntimeError("x")
    await w(cache.get("c"))  # miss, load fails, stale serve
    cache.invalidate("b")
    expected = CacheStats(hits=2, misses=4, loads=5, refreshes=1, load_failures=1, stale_serves=1,
                          evictions=1, invalidations=1)
    assert cache.stats == expected
    assert cache.stats.as_dict()["stale_serves"] == 1
    cache.stats.hits = 99  # a snapshot: exporters cannot corrupt the live counters
    assert cache.stats.hits == 2


async def test_aclose_cancels_pending_refreshes(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock, refresh_ahead=0.5)
    await w(cache.get("a"))
    gate = loader.hold()
    clock.advance(5.0)
    await w(cache.get("a"))
    waiter = asyncio.create_task(cache.get("b"))
    await w(loader.started.wait())
    assert cache.pending_refreshes == 1
    await w(cache.aclose())
    assert loader.cancelled == 2 and cache.pending_refreshes == 0
    with pytest.raises(CacheClosedError):
        await w(waiter)
    with pytest.raises(CacheClosedError):
        await w(cache.get("a"))
    gate.set()


async def test_cancelled_waiter_does_not_cancel_shared_load(loader: Loader, clock: Clock) -> None:
    cache = make(loader, clock)
    gate = loader.hold()
    first = asyncio.create_task(cache.get("a"))
    second = asyncio.create_task(cache.get("a"))
    await w(loader.started.wait())
    first.cancel()
    gate.set()
    assert await w(second) == "a#1"
    assert first.cancelled() and loader.calls == ["a"]


def test_rejects_bad_configuration() -> None:
    async def load(key: str) -> int:
        return 0

    for kw in ({"ttl": 0}, {"ttl": 1, "refresh_ahead": 1.0}, {"ttl": 1, "max_stale": -1},
               {"ttl": 1, "max_entries": 0}):
        with pytest.raises(ValueError):
            TTLCache(load, **kw)  # type: ignore[arg-type]


KEYS = ["a", "b", "c", "d"]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("get"), st.sampled_from(KEYS)),
        st.tuples(st.just("advance"), st.integers(0, 12)),
        st.tuples(st.just("invalidate"), st.sampled_from(KEYS)),
        st.tuples(st.just("invalidate_all"), st.just("")),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_loader_calls_match_model(sequence: list[tuple[str, object]]) -> None:
    """Random gets / time advances / invalidations: the loader is called exactly when a model says it must be.

    Model (ttl 10, refresh-ahead at 8, max 3 entries, LRU): a read of a fresh entry returns it and, past 8s of
    age, reloads it in the background; anything else loads in the foreground and returns the new value.
    """

    async def run() -> None:
        clock, loader = Clock(), Loader()
        cache = make(loader, clock, ttl=10.0, refresh_ahead=0.8, max_entries=3)
        model: OrderedDict[str, tuple[str, float]] = OrderedDict()
        calls: dict[str, int] = dict.fromkeys(KEYS, 0)

        def load(key: str) -> str:
            calls[key] += 1
            model[key] = (f"{key}#{calls[key]}", clock.now)
            model.move_to_end(key)
            while len(model) > 3:
                model.popitem(last=False)
            return model[key][0]

        for op, arg in sequence:
            if op == "get":
                key = str(arg)
                cached = model.get(key)
                if cached is not None and clock.now < cached[1] + 10:
                    expected = cached[0]
                    model.move_to_end(key)
                    if clock.now - cached[1] >= 8:
                        load(key)
                else:
                    expected = load(key)
                assert await w(cache.get(key)) == expected
                await w(cache.drain())
            elif op == "advance":
                clock.advance(float(arg))  # type: ignore[arg-type]
            elif op == "invalidate":
                cache.invalidate(str(arg))
                model.pop(str(arg), None)
            else:
                cache.invalidate_all()
                model.clear()
            assert {k: loader.calls.count(k) for k in KEYS} == calls
            assert [k for k in KEYS if k in cache] == [k for k in KEYS if k in model]
        assert cache.stats.loads == len(loader.calls)
        await w(cache.aclose())

    asyncio.run(run())
