"""tickguard: an execution engine that holds volatility-sized dynamic contingent exits client-side."""

__version__ = "0.1.0"
