"""Registration of the built-in recipes (data only: no torch import here)."""

from __future__ import annotations

from relman.compress.registry import Param, Recipe, register  # noqa: F401
