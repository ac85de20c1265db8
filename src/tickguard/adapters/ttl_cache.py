"""An async TTL cache with refresh-ahead, single-flight loads, a stale bound and explicit invalidation.

Why it exists: IB contract details and per-symbol volatility are slow to fetch (a gateway round trip under
pacing limits) but change rarely, so the engine memoises them.  A value that is too old is worse than a slow
answer, though (a conId changed by a corporate action, yesterday's ATR), so the cache

* refreshes hot keys in the background *before* they expire, so callers on the tick path never wait on IB;
* collapses concurrent misses for one key into one loader call (a burst of orders for a new symbol makes
  one reqContractDetails, not a hundred);
* serves an expired value only while the loader is failing, and then only for ``max_stale`` seconds;
* never stores the result of a load that an invalidation overtook (per-key generation counter).

Dependency-free and clock-injected, so tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import asdict, dataclass, replace
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)


class CacheError(Exception):
    """Errors the cache raises itself.  A loader error on a key with no cached value propagates unchanged."""


class CacheClosedError(CacheError):
    """The cache was used after ``aclose()``: a lifecycle bug in the caller, not a transient condition."""


class StaleValueError(CacheError):
    """The loader keeps failing and the last good value has outlived its expiry by more than ``max_stale``."""

    def __init__(self, key: object, last_error: BaseException, stale_for: float) -> None:
        super().__init__(
            f"cache entry {key!r} expired {stale_for:.3f}s ago (beyond max_stale) and refreshing it failed: "
            f"{last_error!r}"
        )
        self.key = key
        self.last_error = last_error
        self.stale_for = stale_for


@dataclass(slots=True)
class CacheStats:
    """Monotonic counters, shaped so the metrics layer can export ``as_dict()`` as-is."""

    hits: int = 0  # served a fresh value
    misses: int = 0  # no fresh value: the caller waited on a load (or got a stale value / an error)
    loads: int = 0  # loader calls, foreground and background
    refreshes: int = 0  # background refreshes started (refresh-ahead and retries while serving stale)
    load_failures: int = 0
    stale_serves: int = 0  # served an expired value because its refresh failed
    evictions: int = 0  # LRU evictions under max_entries
    invalidations: int = 0  # entries dropped by invalidate/invalidate_all or by should_invalidate

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    loaded_at: float
    ttl: float
    last_error: Exception | None = None  # set while refreshing this entry fails; cleared by a good load
    failed_at: float | None = None

    @property
    def expires_at(self) -> float:
        return self.loaded_at + self.ttl


class TTLCache(Generic[K, V]):
    """Maps keys to values produced by an async ``loader``; see the module docstring for the policy.

    TTL precedence: the ``ttl=`` argument of ``get``/``put`` > ``ttl_for(key)`` > the default ``ttl``.  A
    background refresh keeps the TTL the entry was stored with.  ``on_change(key, old, new)`` runs (sync)
    after a load replaced a value with an unequal one; ``should_invalidate(exc)`` marks loader errors that
    mean "this key no longer exists" (IB error 200): they evict the entry rather than serve it stale.
    """

    def __init__(
        self,
        loader: Callable[[K], Awaitable[V]],
        *,
        ttl: float,
        refresh_ahead: float | None = 0.8,
        max_stale: float = 0.0,
        min_retry_interval: float = 1.0,
        max_entries: int | None = None,
        ttl_for: Callable[[K], float] | None = None,
        on_change: Callable[[K, V, V], None] | None = None,
        should_invalidate: Callable[[Exception], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, got {ttl}")
        if refresh_ahead is not None and not 0 < refresh_ahead < 1:
            raise ValueError(f"refresh_ahead must be in (0, 1) or None, got {refresh_ahead}")
        if max_stale < 0 or min_retry_interval < 0:
            raise ValueError("max_stale and min_retry_interval must be >= 0")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None, got {max_entries}")
        self._loader = loader
        self._ttl = ttl
        self._refresh_ahead = refresh_ahead
        self._max_stale = max_stale
        self._min_retry = min_retry_interval
        self._max_entries = max_entries
        self._ttl_for = ttl_for
        self._on_change = on_change
        self._should_invalidate = should_invalidate
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()  # LRU order: oldest first
        self._inflight: dict[K, asyncio.Task[V]] = {}  # the load new callers of a key join
        self._tasks: dict[asyncio.Task[V], bool] = {}  # every running load (incl. detached) -> is background
        self._gens: dict[K, int] = {}  # bumped when a load for the key is overtaken by invalidate/put
        self._epoch = 0  # bumped by invalidate_all, so it need not touch every key's generation
        self._stats = CacheStats()
        self._closed = False

    async def get(self, key: K, *, ttl: float | None = None) -> V:
        """The value for ``key``: cached if fresh, else loaded (joining a load already in flight).

        Raises the loader's exception if there is no value to fall back on, ``StaleValueError`` if the value
        is past ``max_stale`` and refreshing it failed, ``CacheClosedError`` after ``aclose()``.
        """
        if self._closed:
            raise CacheClosedError("get() on a closed TTLCache")
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if now < entry.expires_at:
                self._stats.hits += 1
                self._entries.move_to_end(key)
                if self._refresh_due(key, entry, now):
                    self._start_load(key, entry.ttl if ttl is None else ttl, background=True)
                return entry.value
            if entry.last_error is not None:
                # The loader is known to be failing: don't make the caller wait on it again.
                if now < entry.expires_at + self._max_stale:
                    self._stats.misses += 1
                    self._stats.stale_serves += 1
                    self._entries.move_to_end(key)
                    if self._retry_allowed(key, entry, now):
                        self._start_load(key, entry.ttl if ttl is None else ttl, background=True)
                    return entry.value
                if not self._retry_allowed(key, entry, now) and key not in self._inflight:
                    self._stats.misses += 1
                    raise StaleValueError(key, entry.last_error, now - entry.expires_at)
        self._stats.misses += 1
        task = self._inflight.get(key) or self._start_load(key, self._resolve_ttl(key, ttl), background=False)
        try:
            # shield: one caller being cancelled must not cancel the load the other waiters share.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and self._closed:  # the load was cancelled by aclose(), not this caller
                raise CacheClosedError(f"TTLCache closed while loading {key!r}") from None
            raise
        except Exception as exc:
            return self._fallback(key, exc)

    def peek(self, key: K) -> V | None:
        """The fresh cached value or None, without loading, counting or refreshing (for sync hot paths)."""
        entry = self._entries.get(key)
        return entry.value if entry is not None and self._clock() < entry.expires_at else None

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stats(self) -> CacheStats:
        """A snapshot copy, so an exporter cannot mutate (or see half-updated) live counters."""
        return replace(self._stats)

    @property
    def pending_refreshes(self) -> int:
        """Background refreshes still running."""
        return sum(1 for background in self._tasks.values() if background)

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Store a value known to be current; a load already in flight for ``key`` will not overwrite it."""
        self._detach(key)
        self._store(key, value, self._resolve_ttl(key, ttl), notify=False)

    def invalidate(self, key: K) -> bool:
        """Drop ``key`` and discard the result of any load in flight for it.  True if anything was dropped."""
        had_load = self._detach(key)
        if self._entries.pop(key, None) is not None:
            self._stats.invalidations += 1
            return True
        return had_load

    def invalidate_all(self) -> int:
        """Drop every entry and discard every in-flight load's result; returns how many entries went."""
        n = len(self._entries)
        self._epoch += 1
        self._inflight.clear()
        self._entries.clear()
        self._stats.invalidations += n
        return n

    async def drain(self) -> None:
        """Wait until no load is running (background refreshes included).  Load errors are not raised here."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel every running load and refuse further use; entries are dropped."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._inflight.clear()
        self._entries.clear()

    def _resolve_ttl(self, key: K, ttl: float | None) -> float:
        if ttl is None:
            ttl = self._ttl_for(key) if self._ttl_for is not None else self._ttl
        if not ttl > 0:
            raise ValueError(f"ttl for {key!r} must be > 0, got {ttl}")
        return ttl

    def _token(self, key: K) -> tuple[int, int]:
        return self._epoch, self._gens.get(key, 0)

    def _retry_allowed(self, key: K, entry: _Entry[V], now: float) -> bool:
        if key in self._inflight:
            return False
        return entry.failed_at is None or now - entry.failed_at >= self._min_retry

    def _refresh_due(self, key: K, entry: _Entry[V], now: float) -> bool:
        if self._refresh_ahead is None or now - entry.loaded_at < self._refresh_ahead * entry.ttl:
            return False
        return self._retry_allowed(key, entry, now)

    def _detach(self, key: K) -> bool:
        """Make a load in flight for ``key`` unable to store its result (its waiters still get it)."""
        if self._inflight.pop(key, None) is None:
            return False
        # Only keys that ever had a load overtaken get a generation, which bounds the dict by that set.
        self._gens[key] = self._gens.get(key, 0) + 1
        return True

    def _start_load(self, key: K, ttl: float, *, background: bool) -> asyncio.Task[V]:
        task = asyncio.get_running_loop().create_task(self._load(key, ttl, self._token(key)))
        self._inflight[key] = task
        self._tasks[task] = background
        if background:
            self._stats.refreshes += 1
        # Mark a background failure as retrieved: it is recorded on the entry, not lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _load(self, key: K, ttl: float, token: tuple[int, int]) -> V:
        me = asyncio.current_task()
        self._stats.loads += 1
        try:
            value = await self._loader(key)
        except Exception as exc:
            self._stats.load_failures += 1
            if self._token(key) == token:
                self._record_failure(key, exc)
            raise
        else:
            if self._token(key) == token:
                self._store(key, value, ttl, notify=True)
            return value
        finally:
            if self._inflight.get(key) is me:
                del self._inflight[key]
            self._tasks.pop(me, None)  # type: ignore[arg-type]

    def _record_failure(self, key: K, exc: Exception) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        if self._should_invalidate is not None and self._should_invalidate(exc):
            del self._entries[key]
            self._stats.invalidations += 1
            return
        entry.last_error = exc
        entry.failed_at = self._clock()

    def _fallback(self, key: K, exc: Exception) -> V:
        """After a failed load a waiter gets the old value while the stale bound allows, else an error."""
        entry = self._entries.get(key)
        if entry is None:
            raise exc
        now = self._clock()
        if now < entry.expires_at:  # stored meanwhile (e.g. by put)
            return entry.value
        if now < entry.expires_at + self._max_stale:
            self._stats.stale_serves += 1
            return entry.value
        raise StaleValueError(key, entry.last_error or exc, now - entry.expires_at) from exc

    def _store(self, key: K, value: V, ttl: float, *, notify: bool) -> None:
        old = self._entries.get(key)
        self._entries[key] = _Entry(value, self._clock(), ttl)
        self._entries.move_to_end(key)
        if self._max_entries is not None:
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
                self._stats.evictions += 1
        if notify and old is not None and self._on_change is not None:
            try:
                if old.value != value:
                    self._on_change(key, old.value, value)
            except Exception:
                # A buggy hook (or an un-comparable value) must not fail the load for its waiters.
                log.exception("on_change hook failed for %r", key)
