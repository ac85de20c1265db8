"""The journal's errors (one home: raised by the journal and by its opening, store/journal_open.py)."""

from __future__ import annotations


class JournalError(RuntimeError):
    """The journal cannot be used; the message says which one and why."""


class JournalInUse(JournalError):
    """Another running engine holds the journal (``Journal.open(for_engine=True)``; the message names it)."""
