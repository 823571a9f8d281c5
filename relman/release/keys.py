"""Moved to `relman.keys`, a base module, so that the catalog can sign checkpoints of its audit
chain without importing the release layer; this name keeps existing imports working."""

from relman.keys import *  # noqa: F401,F403
from relman.keys import PREFIX, _check_name, _write_exclusive  # noqa: F401
