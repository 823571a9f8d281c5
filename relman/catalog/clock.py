"""When and who: the timestamp and the actor every row and audit event is stamped with.

The lowest module of the catalog: the audit chain (`events`), row tracking (`rows`), the
anchor and the catalog all stamp with these, so none of them has to import `catalog.py` for
it (that import once closed the audit circle catalog -> integrity -> catalog).
"""

from __future__ import annotations

import getpass
import os
from datetime import datetime, timezone


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def current_user() -> str:
    """Who is acting: RELMAN_USER, else the login name."""
    env = os.environ.get("RELMAN_USER")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
