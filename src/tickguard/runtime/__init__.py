"""Asyncio, time and wiring around the core.

The engine (the one composition root), the order executor, recovery and reconciliation, the journal
recorder and the background refreshers.
"""
