"""The embedded simulated market and exchange, in virtual time."""
