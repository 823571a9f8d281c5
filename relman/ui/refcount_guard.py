"""A guard against a reference-count bug in the Qt binding: the cause of the window's
`Fatal Python error: none_dealloc` (and of the `bool_dealloc` seen at exit).

What happens: with PySide6/shiboken6 6.12.0 on CPython 3.11, every call of a C++ method that
returns `void` (QPainter.setPen, drawLine, setFont, setClipRect, QTimer.setInterval, …) hands
`None` back to Python *without* taking a reference to it; Python then drops that reference
when it discards the result. Each such call takes one reference from `None` that was never
given. `None` is an ordinary object before CPython 3.12 (3.12 made it immortal), so its count
falls with every painted frame — a pyqtgraph plot's axes make a few hundred such calls per
repaint (`AxisItem.drawPicture`: a setPen and a drawLine per tick) — and when it reaches zero
CPython aborts the process. How soon depends on how much else holds `None` meanwhile, which is
why the window died "once in about an hour" while a live loss curve repainted several times a
second. 6.11.3 does not have the bug (measured here; `probe_drain` below is the measurement).
Our own plotting code could not avoid it: any repaint of any widget costs references.

The guard: `probe_drain()` measures, at start-up, whether a void binding call takes a reference
from `None` (a few hundred calls of a QTimer setter). Where it does, `SingletonGuard` checks the
counts of None, True and False on a timer and gives back what was taken (Py_IncRef through
ctypes: these singletons are never freed while the interpreter runs, so an extra count costs
nothing; no memory is held). Where the binding is sound (a fixed PySide6, CPython ≥ 3.12) the
probe reads 0 and nothing is installed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

PROBE_CALLS = 400
LOW_WATER = 1_000_000  # give references back when a count falls below this…
TOP_UP = 4_000_000  # …up to this (a few seconds of the worst repaint rate measured is ~10^4)


def _incref(obj: object, n: int) -> None:
    """Add `n` to the object's reference count in one step (CPython keeps it in the first
    word of the object: `ob_refcnt`). Only used where the probe saw counts fall, i.e. on a
    CPython whose singletons have ordinary counts."""
    ctypes.c_ssize_t.from_address(id(obj)).value += n


def probe_drain(calls: int = PROBE_CALLS) -> dict[str, int]:
    """How many references `calls` void/bool binding calls took from None / True / False
    (0 each on a sound binding; about `calls` on the faulty one)."""
    from PySide6.QtCore import QTimer

    idle, single = QTimer(), QTimer()
    single.setSingleShot(True)
    out = {}
    for name, obj, call in (("None", None, lambda: idle.setInterval(5)),  # void
                            ("False", False, idle.isActive),  # returns False
                            ("True", True, single.isSingleShot)):  # returns True
        call()
        before = sys.getrefcount(obj)
        for _ in range(calls):
            call()
        out[name] = max(0, before - sys.getrefcount(obj))
    return out


class SingletonGuard:
    """Keeps the counts of None, True and False above `LOW_WATER` on a QTimer (every
    `interval_ms`), where `probe_drain` found that the binding takes references from them."""

    def __init__(self, drains: dict[str, int], interval_ms: int = 250) -> None:
        from PySide6.QtCore import QTimer

        self.objects: list[Any] = [o for name, o in (("None", None), ("True", True), ("False", False))
                                   if drains.get(name, 0) > 0]
        self.given = 0  # references given back so far (the status line and tests read it)
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.top_up)
        self.top_up()
        self.timer.start()

    @property
    def active(self) -> bool:
        return bool(self.objects)

    def top_up(self) -> None:
        for obj in self.objects:
            count = sys.getrefcount(obj)
            if count < LOW_WATER:
                _incref(obj, TOP_UP - count)
                self.given += TOP_UP - count


_guard: SingletonGuard | None = None


def install() -> SingletonGuard | None:
    """Install the guard once per process where the binding needs it (a QApplication must
    exist: the guard runs on a Qt timer). Returns it, or None where the binding is sound."""
    global _guard
    if _guard is not None:
        return _guard
    if os.environ.get("RELMAN_NO_SINGLETON_GUARD"):  # only for the test that shows the crash
        return None
    drains = probe_drain()
    if not any(v > PROBE_CALLS // 2 for v in drains.values()):
        return None
    _guard = SingletonGuard({k: v for k, v in drains.items() if v > PROBE_CALLS // 2})
    return _guard
