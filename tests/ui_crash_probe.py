"""Run as a separate process by tests/test_ui_crash.py (a crash must not take pytest with it).

`stress CATALOG`: the window with the Jobs view on screen repaints a job's live curves while a
real worker reports progress and curve points, until (a) the job ended and its points are all
drawn and (b) the binding has taken more references from None than None ever held — the count
without the guard's gifts reached 0, the point where the unguarded process aborts with `none_dealloc` (see
relman/ui/refcount_guard.py). RELMAN_STRESS_S keeps it going for at least that many seconds (a
longer soak by hand). Prints one JSON line with the figures; exit 0 when it got there.

`crash CATALOG`: the window runs a job while a second one is queued, then the process kills
itself (SIGKILL: no close, no clean-up), as a crash would; the test checks the queued job runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def _window(catalog: Path):
    from PySide6.QtCore import QSettings

    from relman.ui.app import ensure_app
    from relman.ui.qt_main import MainWindow

    app = ensure_app(headless=True)
    w = MainWindow(catalog, settings=QSettings(str(catalog.parent / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=1, poll_ms=50, runner_ms=50)
    w.resize(1024, 700)
    w.show()
    return app, w


def stress(catalog: Path) -> int:
    import relman.cli  # noqa: F401  (job kinds, as the CLI process has them)
    from relman.jobs.queue import enqueue
    from relman.ui.app import ensure_app

    from relman.ui.refcount_guard import PROBE_CALLS, probe_drain

    ensure_app(headless=True)
    faulty = probe_drain()["None"] > PROBE_CALLS // 2  # this binding takes references from None
    start_count = sys.getrefcount(None)  # what None holds before any window code runs
    app, w = _window(catalog)
    steps = 300
    job_id = enqueue(w.catalog, "sleep", {"seconds": 6.0, "steps": steps, "curve": True}, device="cpu")
    jobs = w.show_view("jobs")
    guard = w.refcount_guard
    soak_s = float(os.environ.get("RELMAN_STRESS_S", "0"))
    t0 = time.monotonic()
    deadline = t0 + max(120.0, soak_s + 60.0)
    repaints, drained = 0, 0
    while True:
        app.processEvents()
        before = sys.getrefcount(None)
        jobs.curve_plot.viewport().repaint()
        jobs.curve_plot.repaint()
        drained += max(0, before - sys.getrefcount(None))
        repaints += 1
        status = w.catalog.conn.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()[0]
        drawn = sum(len(c.getData()[0] if c.getData()[0] is not None else ()) for c in jobs.curves.values())
        done = status == "succeeded" and drawn >= 2 * steps and jobs.selected_job == job_id
        # None's count as it would be without the guard's gifts: at 0 the unguarded process aborts
        natural = sys.getrefcount(None) - (guard.given if guard is not None else 0)
        past_the_crash = natural <= 0 if faulty else repaints >= 200
        if done and past_the_crash and time.monotonic() - t0 >= soak_s:
            break
        if time.monotonic() > deadline:
            print(json.dumps({"ok": False, "status": status, "drawn": drawn, "drained": drained,
                              "start_count": start_count, "repaints": repaints}), flush=True)
            return 3
    print(json.dumps({"ok": True, "repaints": repaints, "drained": drained, "start_count": start_count,
                      "faulty_binding": faulty, "guard": guard is not None, "given": guard.given if guard else 0,
                      "seconds": round(time.monotonic() - t0, 1)}), flush=True)
    from relman.ui.app import close_window

    close_window(app, w)
    return 0


def crash(catalog: Path) -> int:
    import relman.cli  # noqa: F401
    from relman.jobs.queue import enqueue

    from relman.jobs.testing import HoldPoint

    hold = HoldPoint(None, "sleep.end", catalog.parent)  # the first job holds at its end
    os.environ.update(hold.env({}))  # before the window starts its runner: workers inherit it
    app, w = _window(catalog)
    first = enqueue(w.catalog, "sleep", {"seconds": 0.2, "steps": 2}, device="cpu")
    second = enqueue(w.catalog, "noop", {}, device="cpu")
    jobs = w.show_view("jobs")
    deadline = time.monotonic() + 90
    from PySide6.QtCore import QEventLoop

    while time.monotonic() < deadline:
        # wait for the window's own events (its poll and runner timers), up to 20 ms, not a sleep
        app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents, 20)
        status = w.catalog.conn.execute("SELECT status FROM jobs WHERE id = ?", [first]).fetchone()[0]
        standby = w.job_actions.standby
        if status == "running" and standby is not None and "stand-by runner" in jobs.summary.text():
            print(json.dumps({"first": first, "second": second, "standby_pid": standby.pid,
                              "summary": jobs.summary.text()}), flush=True)
            hold.release()  # the first job may end now: whoever runs the queue then must start the second
            os.kill(os.getpid(), signal.SIGKILL)
    return 3


if __name__ == "__main__":
    mode, path = sys.argv[1], Path(sys.argv[2])
    raise SystemExit(stress(path) if mode == "stress" else crash(path))
