"""The Interactive Brokers adapter on ib_async."""
