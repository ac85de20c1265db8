"""Broker adapters: the ``Broker`` protocol and its implementations (simulated market, IB)."""
