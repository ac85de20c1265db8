"""The pure domain of tickguard.

Prices, trades and legs, exit rules, the trigger book, trail groups, tick handling, order states and
volatility maths.  No I/O, no asyncio, no database, no broker client: everything hard to get right lives
here so that it can be tested exhaustively and deterministically (``tests/architecture`` enforces it).
"""
