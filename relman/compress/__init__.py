"""Compression recipes: one module per technique, each a plain function registered with typed
parameters in `relman.compress.registry`."""
