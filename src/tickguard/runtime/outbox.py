"""The executor's outbox: orders and cancels waiting for the journal commit that records them.

Write-ahead by construction.  With a journal, each item is queued with the journal position of the write that
records it (``stamp``), and only a ``CommitReceipt`` - which the journal alone issues, after a commit
returned - releases it (``release``).  A receipt taken before the commit cannot cover an item still in the open
transaction, so no caller can send ahead of the journal however it orders its calls; an item whose
transaction was rolled back is dropped, loudly, and never sent by this process (a restart decides again from
what the journal holds).  Without a journal everything is released at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from tickguard.store.journal import CommitReceipt, Journal

log = logging.getLogger(__name__)

T = TypeVar("T")


class WriteAheadError(RuntimeError):
    """An order or a cancel would reach the broker without its journal commit: refused."""


class Outbox(Generic[T]):
    def __init__(self, journal: Journal | None, name: Callable[[T], str]) -> None:
        self._journal = journal
        self._name = name  # how an item is named in a log line
        self._items: list[tuple[int, T]] = []  # (journal position to be committed, item)
        self.unjournaled = 0  # items never sent because their journal transaction rolled back

    def __bool__(self) -> bool:
        return bool(self._items)

    def waiting(self) -> list[T]:
        """What waits for its commit (a view, for tests and inspection)."""
        return [item for _, item in self._items]

    def position(self) -> int:
        """The journal's write position now (0 without a journal): taken before the item's journal note."""
        return self._journal.position if self._journal is not None else 0

    def put(self, item: T, before: int) -> None:
        """Queue ``item``, journaled by the writes made since ``before``.  An item whose note wrote nothing is
        refused - no receipt could ever cover it."""
        after = self.position()
        if self._journal is not None and after == before:
            raise WriteAheadError(f"{self._name(item)} was not journaled (nothing listens to the executor's "
                                  "events); refusing to queue it for the broker")
        self._items.append((after, item))

    def release(self, receipt: CommitReceipt | None) -> list[T]:
        """What may reach the broker now, in the order it was decided: everything without a journal; with one,
        what ``receipt`` covers (the rest waits for its commit; what was rolled back is dropped)."""
        if self._journal is None:
            items, self._items = self._items, []
            return [item for _, item in items]
        if receipt is None or receipt.journal is not self._journal:
            raise WriteAheadError("orders reach the broker only with a commit receipt of this executor's journal "
                                  "(write-ahead); the journal's after-commit hook sends them")
        ready: list[T] = []
        wait: list[tuple[int, Any]] = []
        for position, item in self._items:
            if receipt.covers(position):
                ready.append(item)
            elif receipt.void(position):
                self.unjournaled += 1
                log.error("%s is not sent: the journal transaction that recorded it was rolled back (a restart "
                          "recovers from what the journal holds)", self._name(item))
            else:
                wait.append((position, item))
        self._items = wait
        return ready
