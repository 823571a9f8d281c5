"""Pruning and factorisation: magnitude and structured pruning, low-rank factorisation, and the
model surgery that makes a reshaped child loadable."""
