"""Fake IB Gateway: a TCP server speaking the real TWS wire protocol, for testing against ib_async."""
