"""One resolver for the `"package.module:attr"` targets every registry uses.

Registries (recipes, suites, job kinds, task adapters, data formats, views) name their
implementations as strings so that listing them imports nothing heavy; this module turns a
target into the object when it is finally needed, and gives tests one place to check that
every target resolves (tests/test_targets.py, which also checks the targets respect the layers).
"""

from __future__ import annotations

import importlib
from typing import Any

from relman.errors import RelmanError


def split(target: str) -> tuple[str, str]:
    """("package.module", "attr") of a target; a malformed one is a RelmanError, not a ValueError."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise RelmanError(f"malformed target '{target}' (expected 'package.module:attr')")
    return module, attr


def resolve(target: str) -> Any:
    """Import the target's module and return its attribute (dotted attributes allowed)."""
    module, attr = split(target)
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
