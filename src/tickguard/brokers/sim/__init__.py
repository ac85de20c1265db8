"""The embedded simulated market and exchange (no IB account needed)."""
