"""The outside world behind the ``Broker`` protocol (``broker.py``).

``ib`` speaks to TWS / IB Gateway through ib_async; ``sim`` is the embedded simulated market.  Adapters
never import the runtime: they are driven by it.
"""
